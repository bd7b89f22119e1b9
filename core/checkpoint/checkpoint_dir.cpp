#include "core/checkpoint/checkpoint_dir.h"

#include <algorithm>
#include <charconv>
#include <filesystem>

#include "core/logging/log.h"

namespace linea::checkpoint {
namespace fs = std::filesystem;

namespace {

// The N of "<prefix><N>" (N decimal digits only), or -1.
int64_t parse_step(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t step = -1;
  const char* b = name.data() + prefix.size();
  const char* e = name.data() + name.size();
  const auto [p, ec] = std::from_chars(b, e, step);
  return ec == std::errc() && p == e && step >= 0 ? step : -1;
}

}  // namespace

std::string checkpoints_dir(const std::string& output_dir) {
  return (fs::path(output_dir) / "checkpoints").string();
}
std::string step_dir_name(int64_t step) { return "step-" + std::to_string(step); }
std::string temp_dir_name(int64_t step) { return ".tmp-step-" + std::to_string(step); }

std::vector<CheckpointEntry> list_checkpoints(const std::string& dir) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& d : fs::directory_iterator(dir)) {
    if (!d.is_directory()) continue;
    const int64_t step = parse_step(d.path().filename().string(), "step-");
    if (step < 0) continue;
    out.push_back({step, d.path().string(), fs::exists(d.path() / kCompleteMarker)});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.step < b.step; });
  return out;
}

std::string newest_complete_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (fs::is_directory(dir, ec))
    for (const auto& d : fs::directory_iterator(dir))
      if (d.is_directory() && parse_step(d.path().filename().string(), ".tmp-step-") >= 0)
        spdlog::warn("checkpoint: skipping {}, a checkpoint whose writing did not finish",
                     d.path().string());
  const auto all = list_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->complete) return it->path;
    spdlog::warn("checkpoint: skipping {}: it has no {} marker (incomplete)", it->path,
                 kCompleteMarker);
  }
  return "";
}

std::vector<int64_t> steps_to_delete(std::vector<int64_t> steps, int keep_last, int keep_every) {
  std::sort(steps.begin(), steps.end());
  std::vector<int64_t> out;
  const size_t n = steps.size(), keep = static_cast<size_t>(std::max(keep_last, 0));
  for (size_t i = 0; i + keep < n; ++i)
    if (!(keep_every > 0 && steps[i] % keep_every == 0)) out.push_back(steps[i]);
  return out;
}

void apply_retention(const std::string& dir, int keep_last, int keep_every) {
  std::vector<int64_t> steps;
  for (const auto& c : list_checkpoints(dir))
    if (c.complete) steps.push_back(c.step);
  for (int64_t s : steps_to_delete(steps, keep_last, keep_every)) {
    const fs::path p = fs::path(dir) / step_dir_name(s);
    std::error_code ec;
    fs::remove_all(p, ec);
    if (ec)
      spdlog::warn("checkpoint: could not delete {}: {}", p.string(), ec.message());
    else
      spdlog::info("checkpoint: deleted {} (checkpoint.keep_last / keep_every)", p.string());
  }
}

}  // namespace linea::checkpoint
