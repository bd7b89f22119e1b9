// The checkpoints folder of a run, <train.output_dir>/checkpoints: one `step-<N>` directory per
// committed checkpoint (N = optimizer steps taken), `.tmp-step-<N>` while one is being written.
// A checkpoint is complete when its COMPLETE marker exists (written last, before the rename);
// this file finds the newest complete one and applies the retention rule.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace linea::checkpoint {

inline constexpr const char* kCompleteMarker = "COMPLETE";

// <output_dir>/checkpoints
std::string checkpoints_dir(const std::string& output_dir);
// "step-<N>" and ".tmp-step-<N>"
std::string step_dir_name(int64_t step);
std::string temp_dir_name(int64_t step);

struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
  bool complete = false;  // has the COMPLETE marker
};

// Every step-<N> directory of `dir`, by ascending step (none when `dir` does not exist).
std::vector<CheckpointEntry> list_checkpoints(const std::string& dir);

// The path of the newest complete checkpoint of `dir`, or "" when there is none. Warns (log) about
// incomplete step directories newer than it and about leftover .tmp-step-<N> directories.
std::string newest_complete_checkpoint(const std::string& dir);

// Retention: of the complete checkpoints at `steps`, keep the newest `keep_last` and every one
// whose step is a multiple of `keep_every` (when > 0); returns the steps to delete, ascending.
std::vector<int64_t> steps_to_delete(std::vector<int64_t> steps, int keep_last, int keep_every);

// Deletes what steps_to_delete selects among the complete checkpoints of `dir`.
void apply_retention(const std::string& dir, int keep_last, int keep_every);

}  // namespace linea::checkpoint
