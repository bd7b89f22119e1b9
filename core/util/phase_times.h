// Where a training step spends its time, for profiling runs: LINEA_PHASE_TIMES=1 in the
// environment makes the trainer install a PhaseTimes for each step and log the table of the last
// step. While one is installed (PhaseTimesScope, this thread), every `Phase` synchronises its
// device at both ends and adds the wall time in between to its name: exact per-phase GPU times, at
// the price of the overlap the synchronisation removes (so use it for a breakdown, not for the
// headline tokens/s). Without a scope a Phase costs one thread-local read.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "core/tensor/device.h"

namespace linea {

class PhaseTimes {
 public:
  void add(const std::string& name, double seconds);
  // name, calls, total ms and share of the sum, longest first.
  std::string table() const;
  double total_s() const;

 private:
  struct Entry {
    double seconds = 0;
    int calls = 0;
  };
  std::map<std::string, Entry> entries_;
};

// The PhaseTimes of this thread (null: not profiling).
PhaseTimes* current_phase_times();

class PhaseTimesScope {
 public:
  explicit PhaseTimesScope(PhaseTimes* t);
  ~PhaseTimesScope();
  PhaseTimesScope(const PhaseTimesScope&) = delete;
  PhaseTimesScope& operator=(const PhaseTimesScope&) = delete;

 private:
  PhaseTimes* previous_;
};

// Times from construction to destruction under `name`, on `device`'s work (the default device
// unless named). Nested phases are counted in both (a breakdown, not a partition).
class Phase {
 public:
  explicit Phase(std::string name, Device device = default_device());
  ~Phase();
  Phase(const Phase&) = delete;
  Phase& operator=(const Phase&) = delete;

 private:
  PhaseTimes* times_;
  std::string name_;
  Device device_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace linea
