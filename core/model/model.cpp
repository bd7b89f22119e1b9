#include "core/model/model.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "core/config/config.h"
#include "core/modules/matmul_precision.h"
#include "core/modules/moe/moe_layer.h"
#include "core/util/phase_times.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"

namespace linea {

Model::Model(const config::Config& cfg, DType dtype, parallel::Communicator* sp,
             parallel::Communicator* ep)
    : cfg_(cfg),
      dtype_(dtype),
      matmul_precision_(cfg.train().precision() == "bf16" ? MatmulPrecision::kBF16
                                                          : MatmulPrecision::kStorage) {
  const auto& m = cfg.model();
  embeddings_ = make_parameter("embeddings.weight", {m.vocab_size(), m.hidden_size()}, dtype,
                               /*weight_decay=*/true);
  for (int i = 0; i < m.num_layers(); ++i)
    blocks_.push_back(std::make_unique<Block>(cfg, i, dtype, sp, ep));
  final_norm_ = std::make_unique<RMSNorm>("norm", m.hidden_size(), m.norm_eps(), dtype);
  if (!m.tie_embeddings()) {
    lm_head_ = make_parameter("lm_head.weight", {m.vocab_size(), m.hidden_size()}, dtype, true);
  }
  params_.push_back(&embeddings_);
  for (auto& b : blocks_) {
    b->collect(params_);
    if (MoeLayer* moe = b->moe()) moe_layers_.push_back(moe);
  }
  final_norm_->collect(params_);
  if (lm_head_.value.defined()) params_.push_back(&lm_head_);
}

Model::~Model() = default;

void Model::init(uint64_t seed) {
  const double std = cfg_.model().init_std();
  const double out_std = std / std::sqrt(2.0 * cfg_.model().num_layers());
  init_normal(embeddings_, seed, std);
  for (auto& b : blocks_) b->init(seed, std, out_std);
  if (lm_head_.value.defined()) init_normal(lm_head_, seed, std);
}

Tensor Model::forward_hidden(const Tensor& inputs) {
  const int64_t B = inputs.dim(0), T = inputs.dim(1), D = cfg_.model().hidden_size();
  Tensor x = Tensor::empty({B, T, D}, dtype_);
  kernels::embedding_forward(inputs, embeddings_.value, x);
  for (auto& b : blocks_) x = b->forward(x);
  return final_norm_->forward(x).view({B * T, D});
}

int64_t Model::head_chunk_rows(int64_t rows) const {
  if (head_chunk_rows_ > 0) return std::min(head_chunk_rows_, rows);
  // At most ~1 GiB of logits at a time: one chunk for small models, a few thousand rows of a
  // 150k vocabulary.
  const int64_t row_bytes = cfg_.model().vocab_size() * static_cast<int64_t>(dtype_size(dtype_));
  return std::clamp<int64_t>((int64_t{1} << 30) / row_bytes, 1, rows);
}

double Model::head_loss(const Tensor& hidden, const Tensor& targets, double grad_scale,
                        Tensor* dhidden, int64_t* tokens) {
  const int64_t rows = hidden.dim(0), V = cfg_.model().vocab_size();
  Parameter& head = lm_head_.value.defined() ? lm_head_ : embeddings_;
  const int64_t chunk = head_chunk_rows(rows);
  Tensor logits = Tensor::empty({chunk, V}, dtype_);
  Tensor lse = Tensor::empty({chunk}, dtype_);
  const Tensor w = matmul_operand(head.value);  // its bf16 copy under bf16 precision
  double loss_sum = 0;
  *tokens = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    Tensor lg = r1 - r0 == chunk ? logits : logits.slice(0, r1 - r0);
    Tensor ls = r1 - r0 == chunk ? lse : lse.slice(0, r1 - r0);
    const Tensor h = matmul_operand(hidden.slice(r0, r1)), t = targets.slice(r0, r1);
    kernels::linear_forward(h, w, lg);
    int64_t n = 0;
    const double mean = kernels::cross_entropy_forward(lg, t, ls, &n);
    loss_sum += mean * static_cast<double>(n);
    *tokens += n;
    if (dhidden) {
      // d(grad_scale * loss_sum) over this chunk, written into its logits buffer.
      kernels::cross_entropy_backward(lg, t, ls, grad_scale * static_cast<double>(n), n, lg);
      Tensor dh = dhidden->slice(r0, r1);
      kernels::linear_backward(h, w, matmul_operand(lg), dh, head.grad);
    }
  }
  return loss_sum;
}

void Model::add_moe_stats(LossStats& stats) const {
  for (const MoeLayer* moe : moe_layers_) {
    stats.aux_loss += moe->stats().aux_loss;
    stats.z_loss += moe->stats().z_loss;
    stats.dropped += moe->stats().dropped;
  }
}

void Model::to(Device device) {
  for (Parameter* p : params_) {
    p->value = p->value.to(device);
    p->grad = p->grad.to(device);
  }
}

LossStats Model::forward_backward(const data::Batch& batch, double grad_scale,
                                  double aux_grad_scale) {
  const DefaultDeviceScope on(device());
  const MatmulPrecisionScope precision(matmul_precision_);
  const int64_t B = batch.inputs.dim(0), T = batch.inputs.dim(1), D = cfg_.model().hidden_size();
  const Tensor hidden = forward_hidden(batch.inputs);
  std::optional<Phase> phase(std::in_place, "lm head + loss, fwd + bwd");
  // The LM head and the loss go chunk by chunk of rows (head_chunk_rows), each chunk's backward
  // right after its forward, so the logits never exist for the whole micro-batch.
  Tensor dh = Tensor::empty({B * T, D}, dtype_);
  LossStats stats;
  stats.loss_sum = head_loss(hidden, batch.targets.view({B * T}), grad_scale, &dh, &stats.tokens);
  add_moe_stats(stats);
  for (MoeLayer* moe : moe_layers_) moe->set_aux_grad_scale(aux_grad_scale);
  phase.reset();
  Tensor dx = final_norm_->backward(dh.view({B, T, D}));
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) dx = (*it)->backward(dx);
  kernels::embedding_backward(batch.inputs, dx, embeddings_.grad);
  return stats;
}

LossStats Model::forward_loss(const data::Batch& batch) {
  const DefaultDeviceScope on(device());
  const MatmulPrecisionScope precision(matmul_precision_);
  const int64_t B = batch.inputs.dim(0), T = batch.inputs.dim(1);
  const Tensor hidden = forward_hidden(batch.inputs);
  // Forward-only: drop what the backward would have needed.
  final_norm_->release_saved();
  for (auto& b : blocks_) b->release_saved();
  LossStats stats;
  stats.loss_sum = head_loss(hidden, batch.targets.view({B * T}), 0.0, nullptr, &stats.tokens);
  add_moe_stats(stats);
  return stats;
}

int64_t Model::num_parameters() const {
  int64_t n = 0;
  for (const Parameter* p : params_) n += p->value.numel();
  return n;
}

void Model::zero_grad() {
  for (Parameter* p : params_) p->grad.zero_();
}

}  // namespace linea
