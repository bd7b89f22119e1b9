// Preemption (Slurm sends SIGTERM before a job's time limit or on preemption, and SIGUSR1 with
// `--signal`): while a PreemptionGuard lives, SIGTERM and SIGUSR1 only set a flag. The trainer
// asks after every step whether any rank got one (one max all-reduce of a scalar, so all ranks
// agree and stop after the same step), then saves a checkpoint and returns normally: the job
// exits 0 and a requeued job resumes from that checkpoint.
#pragma once

namespace linea {

class PreemptionGuard {
 public:
  PreemptionGuard();   // installs the handlers (remembering the previous ones)
  ~PreemptionGuard();  // restores them
  PreemptionGuard(const PreemptionGuard&) = delete;
  PreemptionGuard& operator=(const PreemptionGuard&) = delete;

  // The signal received since the guard was made (0: none).
  static int signal_received();
};

}  // namespace linea
