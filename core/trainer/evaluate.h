// Validation: the token-weighted mean cross-entropy (no MoE aux losses) of the model over the
// held-out split, and its perplexity exp(loss). Used by the trainer every eval.every_steps steps
// and by `linea eval --checkpoint PATH`.
//
// Batch b of the validation split reads global samples [b * B, (b + 1) * B), B = eval batch per
// DP rank x dp (the same indexing as training, core/data/dataset.h), so the result does not
// depend on the DP size; eval.batches = 0 visits every window of a token shard's split once.
#pragma once

#include <cstdint>
#include <string>

#include "core/data/dataset.h"
#include "core/model/model.h"
#include "linea.pb.h"
#include "parallel/process_grid.h"

namespace linea {

struct EvalResult {
  double loss = 0;        // mean over target tokens, nats
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // target tokens counted, over every rank
  int64_t batches = 0;    // global validation batches
};

// Collective over grid.dp_sp() and the EP group (every rank calls it with the same config).
EvalResult evaluate(const config::Config& cfg, const parallel::ProcessGrid& grid, Model& model,
                    const data::Dataset& valid);

// `linea eval`: builds the grid and model from `cfg`, loads the model weights of checkpoint `dir`
// and evaluates them. Collective over `world`; returns the checkpoint's step in *step.
EvalResult evaluate_checkpoint(const config::Config& cfg, const std::string& dir,
                               parallel::Communicator& world, int64_t* step);

}  // namespace linea
