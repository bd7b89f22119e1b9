// Saving and restoring the training state: what a run needs to continue exactly where it stopped.
// Layout of one checkpoint (docs/checkpoints.md has names, formats and a PyTorch snippet):
//   step-<N>/model.safetensors        parameters (+ SIGMOID_BIAS router buffers), PyTorch names
//   step-<N>/optimizer.safetensors    AdamW "<param>.exp_avg" / "<param>.exp_avg_sq"
//     with ep = P > 1 each as P shards "model-0000k-of-0000P.safetensors" (k = 1..P): shard k is
//     written by EP rank k - 1 of the first EP group and holds its experts; shard 1 also holds
//     every replicated tensor; model.safetensors.index.json maps each tensor to its shard.
//   step-<N>/config.pbtxt             the resolved config
//   step-<N>/checkpoint.json          step, layout, data position, RNG state, SHA-256 per file
//   step-<N>/COMPLETE                 written last: the SHA-256 of checkpoint.json
// Writing goes to .tmp-step-<N> (every file fsynced), then the marker, then one rename.
// DP replicas hold identical state, so the DP size may change on resume; sp, ep, the model and
// the global batch must match (errors name the field).
#pragma once

#include <cstdint>
#include <string>

#include "core/model/model.h"
#include "core/optim/adamw.h"
#include "linea.pb.h"
#include "parallel/process_grid.h"

namespace linea::checkpoint {

// What a checkpoint holds, borrowed from the trainer. Without an optimizer (evaluation), loading
// restores the model alone and accepts any DP size, SP size and batch.
struct TrainingState {
  const config::Config& cfg;
  const parallel::ProcessGrid& grid;
  Model& model;
  AdamW* optimizer = nullptr;
};

// Writes and commits (needs the optimizer) the checkpoint of the state after `step` optimizer steps
// into <train.output_dir>/checkpoints/step-<step> (replacing one of the same step), then applies
// the retention rule. Collective over grid.world(): every rank must call it at the same step (the
// trainer does periodically; call it on demand, e.g. on a signal, the same way). Returns the
// committed directory.
std::string save_checkpoint(const TrainingState& state, int64_t step);

// The checkpoint a run starts from: checkpoint.resume_from when set (it must exist), else with
// checkpoint.auto_resume the newest complete one of train.output_dir, else "" (start afresh).
std::string resume_path(const config::Config& cfg);

// Restores the state from checkpoint directory `dir` (every rank reads what it holds) and returns
// the step it was taken after. Refuses, naming the file, a missing marker, a checksum mismatch, a
// truncated or missing file; and, naming the field, a model, parallel.sp, parallel.ep, dtype or
// global batch that differs from the checkpoint's.
int64_t load_checkpoint(const TrainingState& state, const std::string& dir);

// Checks the marker and the SHA-256 and size of every file listed in checkpoint.json; throws
// naming the first bad file. Returns the step. Reads everything (no model needed).
int64_t verify_checkpoint(const std::string& dir);

// "model.safetensors" (shards = 1) or "model-0000k-of-0000P.safetensors"; likewise "optimizer".
std::string shard_file_name(const std::string& stem, int shard, int shards);

}  // namespace linea::checkpoint
