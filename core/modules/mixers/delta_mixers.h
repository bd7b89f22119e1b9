// The delta-rule mixers, per head h (row vectors; docs/model/delta_mixers.md has the full math):
//
// DeltaNet (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
// Sequence Length"; the rule from Schlag et al. 2021):
//   q, k, v = SiLU(ShortConv(x Wq)), ...  (width conv_size; without the conv, SiLU(x Wq), ...)
//   q, k    = L2Norm(q), L2Norm(k)       per head
//   beta_t  = sigmoid(x_t W_b)           (2 sigmoid with allow_neg_eigval, Grazzi et al. 2024)
//   S_t = (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,    o_t = q_t S_t / sqrt(dk)
//   y   = Wo concat_h(RMSNorm(o_t) [* SiLU(x_t W_g)])   (output gate OFF by default)
// Gated DeltaNet (Yang, Kautz, Hatamizadeh 2025, "Gated Delta Networks: Improving Mamba2 with
// Delta Rule"): the same with S_t = exp(g_t) (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,
//   g_t = -exp(A_log_h) softplus(x_t W_a + dt_bias_h)   (Mamba2's decay), output gate ON.
//
// Parameters (prefix omitted): q_proj.weight [H dk, D], k_proj.weight [H dk, D], v_proj.weight
// [H dv, D], b_proj.weight [H, D], a_proj.weight [H, D] (gated), A_log [H] (gated), dt_bias [H]
// (gated), g_proj.weight [H dv, D] (output gate), q_conv1d.weight [H dk, K], k_conv1d.weight
// [H dk, K], v_conv1d.weight [H dv, K] (short conv), o_norm.weight [dv] (output_norm),
// o_proj.weight [D, H dv].
// One state per layer (kDense transitions, from DeltaCore); halo = conv_size - 1 rows of x.
#pragma once

#include <optional>

#include "core/modules/linear.h"
#include "core/modules/mixers/mixer_factories.h"
#include "core/modules/mixers/output_gate.h"
#include "core/modules/mixers/short_conv.h"
#include "core/modules/mixers/state_core.h"
#include "core/modules/rmsnorm.h"

namespace linea {

// x (with the halo rows in front) -> projection -> causal depthwise conv + SiLU -> the rows after
// the halo (short_conv.h). Without a conv it is SiLU(x W) (kernels/gates.h's activation, on the
// CPU or CUDA): the activation the papers keep when the conv is off.
class ConvProjection {
 public:
  ConvProjection(const std::string& prefix, const std::string& name, int64_t in, int64_t out,
                 int64_t conv_size, DType dtype);
  void init(uint64_t seed, double std);
  void collect_projection(ParameterList& out) { proj_.collect(out); }
  void collect_conv(ParameterList& out);
  void release_saved();
  // xe [B, K - 1 + T, in] -> [B, T, out].
  Tensor forward(const Tensor& xe);
  // dy [B, T, out] -> dxe [B, K - 1 + T, in]; conv weight and projection grads `+=`.
  Tensor backward(const Tensor& dy);

 private:
  Linear proj_;
  std::optional<ShortConv> conv_;  // [out, K] when learned
  Tensor pre_;                     // the projection, saved for SiLU's backward without a conv
};

class DeltaMixer final : public TokenMixer {
 public:
  DeltaMixer(const MixerContext& ctx, const config::MixerConfig& m);
  void init(uint64_t seed, double std, double out_std) override;
  void collect(ParameterList& out) override;
  void release_saved() override;
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;
  int num_states() const override { return 1; }
  int64_t halo_size() const override { return halo_; }

  // What the last forward fed the delta rule (held until the backward; for tests and probes):
  // normalised q, k [B, T, H, dk], beta [B, T, H], log decay g [B, T, H] (undefined for DeltaNet).
  const Tensor& normalized_q() const { return q_; }
  const Tensor& normalized_k() const { return k_; }
  const Tensor& beta() const { return beta_; }
  const Tensor& log_decay() const { return g_; }

 private:
  void init_decay_parameters();

  bool gated_;
  int64_t heads_, dk_, dv_, halo_;
  double beta_scale_;
  ConvProjection q_branch_, k_branch_, v_branch_;
  Linear b_proj_;
  std::optional<Linear> a_proj_;
  std::optional<SwishOutputGate> out_gate_;
  std::optional<Parameter> A_log_, dt_bias_;
  std::optional<RMSNorm> o_norm_;
  Linear o_proj_;
  DeltaCore core_;
  // Saved by the forward for the backward.
  Tensor q_raw_, k_raw_, q_rstd_, k_rstd_;  // before the L2 norm, and its 1 / norm
  Tensor q_, k_;                            // after it (shared with the core, no extra memory)
  Tensor b_, beta_, a_, g_;                 // beta and decay logits and values
};

}  // namespace linea
