// Datasets hand out samples by global index; the order depends only on the data seed and the
// global sample index, so that resume and a change of DP size keep the exact stream.
//
// Global sample index of row j of micro-batch m of optimizer step s on DP rank d:
//   g = ((s * grad_accum + m) * dp + d) * micro_batch + j
// so each DP rank reads a disjoint, deterministic slice of every global batch.
#pragma once

#include <cstdint>
#include <memory>

#include "core/data/batch.h"
#include "linea.pb.h"

namespace linea::data {

class Dataset {
 public:
  virtual ~Dataset() = default;
  // Writes sample g: seq_len inputs and seq_len targets (targets[t] = inputs[t + 1] for text).
  virtual void sample(int64_t g, int32_t* inputs, int32_t* targets) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual int64_t seq_len() const = 0;
  // Distinct samples before the order repeats (one epoch); 0 where there is no single epoch:
  // generated data, or a blend whose datasets repeat at different rates.
  // Lets validation visit every held-out window exactly once.
  virtual int64_t samples_per_epoch() const { return 0; }
};

// Which part of the data a dataset serves. Validation holds out the last data.valid_fraction of
// the documents of the token shard (or of each Megatron dataset); for MQAR it draws from a
// separate seed stream.
enum class Split { kTrain, kValid };

// Builds the dataset the config names (token shard, MQAR or Megatron); errors name the data.*
// field or file.
std::unique_ptr<Dataset> make_dataset(const config::Config& cfg, Split split = Split::kTrain);

// Token shard: non-overlapping windows of seq_len + 1 tokens; the window order is a seeded
// permutation, redrawn each epoch (epoch = g / num_windows).
class TokenShardDataset;
// MQAR: sample g is generated from a generator seeded by (seed, g).
class MqarDataset;
// Megatron indexed datasets, blended: megatron_dataset.h.

// Fills a micro-batch for (step, micro step) of this DP rank.
Batch make_batch(const Dataset& ds, int64_t step, int grad_accum, int micro, int dp, int dp_rank,
                 int micro_batch);

}  // namespace linea::data
