#include "core/util/phase_times.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#ifdef LINEA_HAS_CUDA
#include "core/tensor/cuda_stream.h"
#endif

namespace linea {
namespace {

thread_local PhaseTimes* current = nullptr;

void synchronize(Device d) {
#ifdef LINEA_HAS_CUDA
  if (!d.is_cpu()) cuda::synchronize(d.index);
#else
  static_cast<void>(d);
#endif
}

}  // namespace

void PhaseTimes::add(const std::string& name, double seconds) {
  Entry& e = entries_[name];
  e.seconds += seconds;
  ++e.calls;
}

double PhaseTimes::total_s() const {
  double t = 0;
  for (const auto& [name, e] : entries_) t += e.seconds;
  return t;
}

std::string PhaseTimes::table() const {
  std::vector<std::pair<std::string, Entry>> rows(entries_.begin(), entries_.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  const double total = std::max(total_s(), 1e-12);
  std::string out = "phase                                   calls   total ms   share\n";
  char line[160];
  for (const auto& [name, e] : rows) {
    std::snprintf(line, sizeof line, "%-38s %6d %10.2f %6.1f%%\n", name.c_str(), e.calls,
                  1e3 * e.seconds, 100 * e.seconds / total);
    out += line;
  }
  return out;
}

PhaseTimes* current_phase_times() { return current; }

PhaseTimesScope::PhaseTimesScope(PhaseTimes* t) : previous_(current) { current = t; }

PhaseTimesScope::~PhaseTimesScope() { current = previous_; }

Phase::Phase(std::string name, Device device)
    : times_(current), name_(std::move(name)), device_(device) {
  if (!times_) return;
  synchronize(device_);
  start_ = std::chrono::steady_clock::now();
}

Phase::~Phase() {
  if (!times_) return;
  synchronize(device_);
  times_->add(name_,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
}

}  // namespace linea
