#include "core/trainer/preemption.h"

#include <csignal>

namespace linea {
namespace {

volatile std::sig_atomic_t received = 0;

extern "C" void on_signal(int sig) { received = sig; }

struct sigaction previous_term, previous_usr1;

}  // namespace

PreemptionGuard::PreemptionGuard() {
  received = 0;
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // blocking calls (MPI, file I/O) continue after the handler
  sigaction(SIGTERM, &sa, &previous_term);
  sigaction(SIGUSR1, &sa, &previous_usr1);
}

PreemptionGuard::~PreemptionGuard() {
  sigaction(SIGTERM, &previous_term, nullptr);
  sigaction(SIGUSR1, &previous_usr1, nullptr);
}

int PreemptionGuard::signal_received() { return received; }

}  // namespace linea
