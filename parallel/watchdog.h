// A watchdog for collectives that never finish (a rank stopped, hung or cut off while the others
// wait in a collective): a communicator with a watchdog marks each blocking call in flight
// (`Watch`), and a monitor thread checks the mark every second. When one call has been in flight
// for longer than the timeout, the process logs its rank, the operation and the group to stderr and
// leaves with exit code 3, so that the launcher (mpirun, srun) ends the job non-zero instead of
// letting it hang; a rerun resumes from the last checkpoint.
//
// One watchdog per process, owned by whoever builds the communicators (the trainer) and passed
// to them (Communicator::set_watchdog, inherited by split groups); nothing global. Only blocking
// calls are watched: on the MPI backend every collective; on NCCL the enqueue and the host
// read-backs that wait for it (the trainer's scalar all-reduces).
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

namespace linea::parallel {

class CollectiveWatchdog {
 public:
  // timeout_s > 0; rank is this process's world rank, for the message.
  CollectiveWatchdog(double timeout_s, int rank);
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // Marks `op` on `group` in flight for the object's lifetime (calls nest: the outermost counts).
  class Watch {
   public:
    Watch(CollectiveWatchdog* w, const char* op, const std::string& group);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;

   private:
    CollectiveWatchdog* w_;
    bool outermost_ = false;
  };

  double timeout_s() const { return timeout_s_; }

 private:
  void monitor();

  double timeout_s_;
  int rank_;
  std::mutex mu_;  // guards op_, group_ and since_
  const char* op_ = nullptr;
  std::string group_;
  std::chrono::steady_clock::time_point since_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace linea::parallel
