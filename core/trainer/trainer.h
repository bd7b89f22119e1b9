// The training loop: builds the process grid, data, model and optimizer from a validated config
// and runs `train.steps` optimizer steps, each of `train.grad_accum_steps` micro-batches per DP
// rank. The loss of a step is the token-weighted mean over every target token of the global batch,
// so W ranks train exactly as one rank with W times the batch.
//
// Writes into train.output_dir (rank 0): config.pbtxt (the resolved config) and metrics.jsonl (one
// JSON object per logged step: step, loss, lr, grad_norm, tokens_per_s, step_time_s, tokens,
// comm_bytes, peak_rss_mb; with eval.every_steps also lines of step, val_loss, val_ppl,
// val_tokens).
//
// Checkpoints (core/checkpoint/checkpoint.h): before the loop the run resumes from
// checkpoint.resume_from or the newest complete checkpoint of train.output_dir/checkpoints (the
// loop then starts at its step; metrics.jsonl keeps its lines up to that step and is appended
// to); after a step it saves every checkpoint.every_steps steps, after the last step, and when
// train.stop_after_steps ends the run early. checkpoint::save_checkpoint(state, step) saves on
// demand (collective).
#pragma once

#include <vector>

#include "linea.pb.h"
#include "parallel/communicator.h"

namespace linea {

struct TrainSummary {
  int64_t first_step = 0;      // the step this run started at (> 0 when it resumed)
  std::vector<double> losses;  // one per step of this run: losses[i] is step first_step + i
  // MoE aux + z loss per step (mean over micro-batches and ranks; 0 without MoE layers).
  std::vector<double> aux_losses;
  int64_t num_parameters = 0;
  // Copies of the parameters after the last step, in Model::parameters() order (for equivalence
  // tests; cheap at the sizes trained on CPU).
  std::vector<Tensor> final_parameters;
  // Steps skipped for a non-finite loss or gradient (train.nonfinite = skip).
  int64_t skipped_steps = 0;
  // The signal (SIGTERM, SIGUSR1) that stopped the run early, after its step; 0: ran to the end.
  int stopped_by_signal = 0;
};

TrainSummary train(const config::Config& cfg, parallel::Communicator& world);

}  // namespace linea
