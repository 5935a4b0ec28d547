#include "serving/job.h"

namespace tserve::serving {

bool Job::Complete(JobResult result) {
  if (completed_.exchange(true, std::memory_order_acq_rel)) return false;
  Done done = std::move(done_);
  if (done) done(std::move(result));
  return true;
}

}  // namespace tserve::serving
