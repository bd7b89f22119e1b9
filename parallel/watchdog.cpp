#include "parallel/watchdog.h"

#include <cstdio>
#include <cstdlib>

#include "core/util/check.h"

namespace linea::parallel {

CollectiveWatchdog::CollectiveWatchdog(double timeout_s, int rank)
    : timeout_s_(timeout_s), rank_(rank) {
  LINEA_CHECK(timeout_s > 0) << "CollectiveWatchdog: timeout " << timeout_s << " s must be > 0";
  thread_ = std::thread([this] { monitor(); });
}

CollectiveWatchdog::~CollectiveWatchdog() {
  stop_ = true;
  thread_.join();
}

CollectiveWatchdog::Watch::Watch(CollectiveWatchdog* w, const char* op, const std::string& group)
    : w_(w) {
  if (!w_) return;
  std::lock_guard<std::mutex> lock(w_->mu_);
  if (w_->op_) return;  // nested inside a watched call (a staged or composite collective)
  outermost_ = true;
  w_->op_ = op;
  w_->group_ = group;
  w_->since_ = std::chrono::steady_clock::now();
}

CollectiveWatchdog::Watch::~Watch() {
  if (!w_ || !outermost_) return;
  std::lock_guard<std::mutex> lock(w_->mu_);
  w_->op_ = nullptr;
}

void CollectiveWatchdog::monitor() {
  while (!stop_) {
    // Short sleeps, so that the destructor does not wait long.
    for (int i = 0; i < 10 && !stop_; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::lock_guard<std::mutex> lock(mu_);
    if (!op_) continue;
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - since_).count();
    if (waited <= timeout_s_) continue;
    std::fprintf(stderr,
                 "[rank %d] error: collective %s on group '%s' did not finish within %.0f s "
                 "(parallel.collective_timeout_s); another rank has probably died or hung. "
                 "Exiting with code 3 so that the job ends; rerun to resume from the last "
                 "checkpoint.\n",
                 rank_, op_, group_.c_str(), timeout_s_);
    std::fflush(stderr);
    std::_Exit(3);
  }
}

}  // namespace linea::parallel
