// MoE routers: logits z = x W^T (W = "<prefix>.weight" [E, D]), top-k experts per token and their
// combine weights, plus the load-balancing aux loss and the router z-loss with their gradients.
//
//   SOFTMAX_TOPK (Qwen2-MoE, Mixtral): p = softmax(z); top-k by p; w = rs * p_chosen, or with
//     renormalize w = rs * p_chosen / sum(p_chosen).
//   SIGMOID_BIAS (DeepSeek-V3): s = sigmoid(z); top-k by s + b, where b is a non-trainable
//     per-expert buffer (not a Parameter: no gradient, no optimizer); w = rs * s_chosen /
//     sum(s_chosen). update_bias(load) moves b by rate * sign(mean_load - load_e) per expert.
//   rs = moe.routed_scaling. Ties in the top-k pick the lower expert index.
//
// Losses of one forward (N tokens, k copies each), both differentiable. With a sequence group
// (the SP ranks that each hold a shard of the same sequences), N, f_e, P_e and the z-loss mean
// are taken over the group's tokens, so the losses equal those of the unsplit micro-batch; each
// rank reports the group's losses and scales its share of their gradient by the group size (the
// step objective averages the losses over every rank, docs/moe.md).
//   aux = aux_loss_coeff * E * sum_e f_e * P_e, f_e = (copies routed to e) / (N k) (before any
//         capacity drop; piecewise constant), P_e = mean_t q_{t,e}, q = p (softmax router) or
//         s / sum_e s (sigmoid router).
//   z   = z_loss_coeff * mean_t logsumexp(z_t)^2.
// The top-k choice is piecewise constant: gradients flow through the weights, P_e and the z-loss.
// backward(dw, aux_scale) returns dx for d(loss)/dw = dw plus aux_scale * d(aux + z), and
// accumulates (`+=`) the same into W's gradient. Computed in f64 on CPU.
//
// On a GPU (x a CUDA tensor; kernels/cuda/moe_route.cu): the same formulas in f32, one warp per
// token; the weights stay on the device (Routing::weights) and backward takes d(weights) as a
// device tensor. The host reads back one buffer per forward, the [N k] chosen experts and the
// per-expert sums of the losses (it needs them for the dispatch plan, the load and the losses),
// and uploads d(aux)/dq per expert for backward while the stream is idle; the sigmoid bias is
// uploaded when it has changed since the last forward.
#pragma once

#include <vector>

#include "core/modules/linear.h"
#include "linea.pb.h"
#include "parallel/communicator.h"

namespace linea {

struct Routing {
  int64_t tokens = 0, top_k = 0;
  std::vector<int32_t> expert;  // [N * k], copy c = t * k + j
  std::vector<double> weight;   // [N * k] combine weights (CPU inputs)
  // GPU inputs: the experts as [N * k] i32 and the combine weights as [N * k] f32, on x's device.
  Tensor expert_index, weights;
};

class Router {
 public:
  // seq: the sequence group (borrowed; null or size 1: this rank's tokens are the micro-batch).
  Router(const std::string& name, int64_t hidden, const config::MoeConfig& cfg, DType dtype,
         parallel::Communicator* seq = nullptr);
  void init(uint64_t seed, double std) { init_normal(proj_.weight(), seed, std); }
  // x [N, D]; saves what backward needs.
  const Routing& forward(const Tensor& x);
  // dweight [N * k] = d(loss)/d(weight); returns dx [N, D].
  Tensor backward(const std::vector<double>& dweight, double aux_scale);
  // GPU: dweight [N * k] f32 on the device of the forward's x.
  Tensor backward(const Tensor& dweight, double aux_scale);
  void collect(ParameterList& out) { proj_.collect(out); }
  void release_saved() {
    proj_.release_saved();
    routing_ = Routing{};
    score_.clear();
    lse_.clear();
    softmax_.clear();
    score_dev_ = prob_dev_ = lse_dev_ = daux_dev_ = Tensor();  // bias_dev_ is a buffer, not saved
  }

  double aux_loss() const { return aux_loss_; }
  double z_loss() const { return z_loss_; }
  // Routed copies per expert in the last forward (before capacity).
  const std::vector<int64_t>& load() const { return load_; }
  // SIGMOID_BIAS: b_e += rate * sign(mean(load) - load_e). No-op for SOFTMAX_TOPK.
  void update_bias(const std::vector<double>& load);
  std::vector<double>& bias() { return bias_; }
  Parameter& weight() { return proj_.weight(); }
  const std::vector<double>& combine_weights() const { return routing_.weight; }
  // The routing of the last forward (kept across a recomputation's replay).
  const Routing& routing() const { return routing_; }
  const Tensor& combine_weight_tensor() const { return routing_.weights; }  // GPU

 private:
  const Routing& forward_cuda(const Tensor& x);
  // aux_loss_ and z_loss_ from this rank's per-expert probability sums, sum of lse^2 and tokens
  // (summed over the sequence group first); fills group_load_, group_tokens_, group_size_.
  void finish_losses(const std::vector<double>& prob_sum, double z_sum, int64_t tokens);
  config::MoeConfig cfg_;
  int64_t experts_;
  Linear proj_;
  std::vector<double> bias_;
  parallel::Communicator* seq_;
  Routing routing_;
  std::vector<int64_t> load_;
  // Over the sequence group (this rank alone without one): routed copies per expert and tokens.
  std::vector<double> group_load_;
  double group_tokens_ = 0, group_size_ = 1;
  // Saved for backward: per-token scores (p or s), logsumexp of the logits and softmax(z).
  std::vector<double> score_, lse_, softmax_;
  double aux_loss_ = 0, z_loss_ = 0;
  DType dtype_;
  // GPU: saved for backward (f32 [N, E], [N, E], [N], [E]), and the bias as last uploaded.
  Tensor score_dev_, prob_dev_, lse_dev_, daux_dev_, bias_dev_;
  std::vector<double> bias_on_device_;
};

}  // namespace linea
