#include "serving/job.h"

namespace tserve::serving {

void Job::Deliver(JobResult result) {
  Done done = std::move(done_);
  if (done) done(std::move(result));
}

}  // namespace tserve::serving
