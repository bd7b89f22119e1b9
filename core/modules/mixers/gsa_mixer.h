// Gated Slot Attention (Zhang et al. 2024, "Gated Slot Attention for Efficient Linear-Time
// Sequence Modeling"), per head with m = num_slots memory slots (docs/model/gsa_mom.md):
//   q = swish(x Wq), k = swish(x Wk), v = swish(x Wv)      (after an optional short conv + SiLU)
//   log alpha_t = logsigmoid(x_t Wf) / tau     in (-inf, 0)^m, tau = gate_logit_normalizer (8)
//   K~_t = diag(alpha_t) K~_{t-1} + (1 - alpha_t)^T k_t,  V~_t = diag(alpha_t) V~_{t-1} + (1 -
//   alpha_t)^T v_t o_t = softmax(q_t K~_t^T / sqrt(dk)) V~_t y = Wo (RMSNorm_head(o) * swish(x Wg))
// as two GlaCore passes joined by the softmax over slots:
//   pass 1 (state 0, [B, H, dk, m] = K~^T): query q, key k, value 1 - alpha, value-side decay
//   alpha; pass 2 (state 1, [B, H, m, dv] = V~):   query p = softmax(scores), key 1 - alpha, value
//   v,
//                                            key-side decay alpha.
// Both transitions are diagonal (sum of log alpha over the segment). The outputs are not affine in
// the incoming states (the softmax sits between the passes), so a segment recomputes them from
// SegmentIn::states, as DESIGN.md says.
// Parameters: <prefix>.q_proj.weight [H*dk, D], .k_proj.weight [H*dk, D], .v_proj.weight
// [H*dv, D], .f_proj.weight [H*m, D], .g_proj.weight [H*dv, D] (output gate), .o_norm.weight [dv],
// .o_proj.weight [D, H*dv]; with the short conv also .q_conv1d.weight [H*dk, K],
// .k_conv1d.weight [H*dk, K], .v_conv1d.weight [H*dv, K].
#pragma once

#include <optional>

#include "core/modules/linear.h"
#include "core/modules/mixers/mixer_factories.h"
#include "core/modules/mixers/output_gate.h"
#include "core/modules/mixers/short_conv.h"
#include "core/modules/mixers/state_core.h"
#include "core/modules/rmsnorm.h"

namespace linea {

class GatedSlotAttention final : public TokenMixer {
 public:
  GatedSlotAttention(const MixerContext& ctx, const config::MixerConfig& m);
  void init(uint64_t seed, double std, double out_std) override;
  void collect(ParameterList& out) override;
  void release_saved() override;
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;
  int num_states() const override { return 2; }
  int64_t halo_size() const override { return conv_size_ > 0 ? conv_size_ - 1 : 0; }

 private:
  int64_t heads_, dk_, dv_, slots_;
  double gate_norm_;   // tau: log alpha = logsigmoid(.) / tau
  int64_t conv_size_;  // 0 = no short convolution
  Linear q_proj_, k_proj_, v_proj_, f_proj_, o_proj_;
  std::optional<SwishOutputGate> out_gate_;
  std::optional<RMSNorm> o_norm_;
  std::optional<ShortConv> q_conv_, k_conv_, v_conv_;
  GlaCore keys_, values_;  // pass 1 and pass 2
  // Saved for the backward.
  int64_t T_ = 0;
  Tensor q_pre_, k_pre_, v_pre_;  // swish inputs [B, T, H, d]
  Tensor f_, log_alpha_, p_;
};

}  // namespace linea
