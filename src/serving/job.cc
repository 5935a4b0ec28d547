#include "serving/job.h"

namespace tserve::serving {

void Job::Deliver(JobResult result) { sink_.Finish(std::move(result)); }

}  // namespace tserve::serving
