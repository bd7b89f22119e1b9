// The language model: embedding, pre-norm blocks, final RMSNorm, LM head (tied to the embedding
// or not) and softmax cross-entropy over the vocabulary.
// Parameter names: embeddings.weight [V, D], layers.<i>.*, norm.weight [D], lm_head.weight [V, D]
// (untied only).
#pragma once

#include <memory>
#include <vector>

#include "core/data/batch.h"
#include "core/model/block.h"
#include "core/modules/matmul_precision.h"

namespace linea {

// A micro-batch's loss as a sum over its target tokens and their count, so that means over
// micro-batches and ranks can be weighted by tokens exactly.
// aux_loss and z_loss: the MoE losses of this micro-batch (coefficients included), summed over
// the MoE layers; each layer's losses are means over this micro-batch's tokens (docs/moe.md).
struct LossStats {
  double loss_sum = 0;
  int64_t tokens = 0;
  double aux_loss = 0;
  double z_loss = 0;
  int64_t dropped = 0;  // expert copies dropped by the capacity, over the MoE layers
};

class Model {
 public:
  // sp: the sequence-parallel group (null: none); batches then hold this rank's shard of every
  // sequence. ep: the expert-parallel group (null: none); the MoE layers then hold only this
  // rank's experts, and parameters() lists only those.
  Model(const config::Config& cfg, DType dtype, parallel::Communicator* sp = nullptr,
        parallel::Communicator* ep = nullptr);
  ~Model();
  // Initialises every parameter from `seed` (std = model.init_std; output projections scaled by
  // 1/sqrt(2 * num_layers)); identical on every rank.
  void init(uint64_t seed);

  // Forward and backward of one micro-batch: accumulates into the gradients
  // grad_scale * d(loss_sum)/d(parameter) + aux_grad_scale * d(aux_loss + z_loss)/d(parameter).
  LossStats forward_backward(const data::Batch& batch, double grad_scale,
                             double aux_grad_scale = 1.0);
  // Forward only (evaluation).
  LossStats forward_loss(const data::Batch& batch);

  const ParameterList& parameters() const { return params_; }
  // Moves every parameter (value and gradient) to `device`; forward and backward then allocate
  // their activations there too (DefaultDeviceScope). Batches must be on the same device.
  void to(Device device);
  Device device() const { return embeddings_.value.device(); }
  // The MoE channel mixers, in layer order (empty for a dense model).
  const std::vector<MoeLayer*>& moe_layers() const { return moe_layers_; }
  // Parameters held by this rank (with EP: the replicated ones plus this rank's experts).
  int64_t num_parameters() const;
  void zero_grad();
  DType dtype() const { return dtype_; }

  // Rows of logits the LM head and loss handle at a time (0: automatic, about 1 GiB of logits);
  // for tests of the chunked head.
  void set_head_chunk_rows(int64_t rows) { head_chunk_rows_ = rows; }

 private:
  // Embedding, blocks and final norm: the normed hidden states [B * T, D].
  Tensor forward_hidden(const Tensor& inputs);
  int64_t head_chunk_rows(int64_t rows) const;
  // Sum of the token losses of `hidden` against `targets`, chunk by chunk of rows; with dhidden,
  // each chunk's backward follows its forward: dhidden gets d(grad_scale * loss_sum)/d(hidden)
  // and the head's gradient accumulates. *tokens: the counted (non-ignored) targets.
  double head_loss(const Tensor& hidden, const Tensor& targets, double grad_scale, Tensor* dhidden,
                   int64_t* tokens);
  void add_moe_stats(LossStats& stats) const;

  config::Config cfg_;
  DType dtype_;
  Parameter embeddings_;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::unique_ptr<RMSNorm> final_norm_;
  Parameter lm_head_;  // undefined value when tied
  ParameterList params_;
  std::vector<MoeLayer*> moe_layers_;
  int64_t head_chunk_rows_ = 0;
  MatmulPrecision matmul_precision_;  // train.precision (bf16 affects CUDA tensors only)
};

}  // namespace linea
