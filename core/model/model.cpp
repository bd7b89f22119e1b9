#include "core/model/model.h"

#include <cmath>

#include "core/config/config.h"
#include "core/modules/moe/moe_layer.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/matmul.h"

namespace linea {

Model::Model(const config::Config& cfg, DType dtype, parallel::Communicator* sp,
             parallel::Communicator* ep)
    : cfg_(cfg), dtype_(dtype) {
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

Tensor Model::forward_logits(const Tensor& inputs) {
  const int64_t B = inputs.dim(0), T = inputs.dim(1), D = cfg_.model().hidden_size();
  Tensor x = Tensor::empty({B, T, D}, dtype_);
  kernels::embedding_forward(inputs, embeddings_.value, x);
  for (auto& b : blocks_) x = b->forward(x);
  final_hidden_ = final_norm_->forward(x);
  const Parameter& head = lm_head_.value.defined() ? lm_head_ : embeddings_;
  Tensor logits = Tensor::empty({B * T, cfg_.model().vocab_size()}, dtype_);
  kernels::linear_forward(final_hidden_.view({B * T, D}), head.value, logits);
  return logits;
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
  const int64_t B = batch.inputs.dim(0), T = batch.inputs.dim(1), D = cfg_.model().hidden_size();
  Tensor logits = forward_logits(batch.inputs);
  Tensor targets = batch.targets.view({B * T});
  Tensor lse = Tensor::empty({B * T}, dtype_);
  int64_t n = 0;
  double mean = kernels::cross_entropy_forward(logits, targets, lse, &n);
  LossStats stats{mean * static_cast<double>(n), n};
  add_moe_stats(stats);
  for (MoeLayer* moe : moe_layers_) moe->set_aux_grad_scale(aux_grad_scale);

  // d(grad_scale * loss_sum) = grad_scale * n * d(mean); written into the logits buffer.
  kernels::cross_entropy_backward(logits, targets, lse, grad_scale * static_cast<double>(n), n,
                                  logits);
  Parameter& head = lm_head_.value.defined() ? lm_head_ : embeddings_;
  Tensor dh = Tensor::empty({B, T, D}, dtype_);
  kernels::linear_backward(final_hidden_.view({B * T, D}), head.value, logits, dh, head.grad);
  final_hidden_ = Tensor();
  Tensor dx = final_norm_->backward(dh);
  for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) dx = (*it)->backward(dx);
  kernels::embedding_backward(batch.inputs, dx, embeddings_.grad);
  return stats;
}

LossStats Model::forward_loss(const data::Batch& batch) {
  const DefaultDeviceScope on(device());
  const int64_t B = batch.inputs.dim(0), T = batch.inputs.dim(1);
  Tensor logits = forward_logits(batch.inputs);
  Tensor lse = Tensor::empty({B * T}, dtype_);
  int64_t n = 0;
  double mean = kernels::cross_entropy_forward(logits, batch.targets.view({B * T}), lse, &n);
  // Forward-only: drop what the backward would have needed.
  final_hidden_ = Tensor();
  LossStats stats{mean * static_cast<double>(n), n};
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
