// The linear mixers with a decaying state, S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t (one GlaCore
// pass each; equations, parameter names and papers in docs/model/decay_mixers.md):
//   constant decay gk = log(lambda_h):   LIGHTNING (TransNormerLLM / Lightning Attention),
//                                        RETNET (retention)
//   scalar data-dependent gk [B, T, H]:  MAMBA2 (SSD), SIMPLE_GLA
//   vector gk [B, T, H, Dk]:             GLA (low-rank gate), HGRN2 (forget gate, key = 1 - f)
// DecayAttention holds the five with q/k/v projections; Mamba2 its own in_proj layout.
#pragma once

#include <optional>
#include <vector>

#include "core/modules/linear.h"
#include "core/modules/mixers/decay_ops.h"
#include "core/modules/mixers/mixer_factories.h"
#include "core/modules/mixers/short_conv.h"
#include "core/modules/mixers/state_core.h"
#include "core/modules/rmsnorm.h"
#include "kernels/gates.h"

namespace linea {

// LIGHTNING, RETNET, SIMPLE_GLA, GLA, HGRN2:
//   q, k, v from projections of x (optionally through a short causal convolution), the kind's
//   feature maps and gate; o = GlaCore(q, k, v, gk); y = Wo (act(x Wg) * RMSNorm_head(o)).
class DecayAttention final : public TokenMixer {
 public:
  DecayAttention(const MixerContext& ctx, const config::MixerConfig& m);
  void init(uint64_t seed, double std, double out_std) override;
  void collect(ParameterList& out) override;
  void release_saved() override {
    for (Linear* l : {&q_proj_, &k_proj_, &v_proj_, &o_proj_}) l->release_saved();
    for (auto* c : {&q_conv_, &k_conv_, &v_conv_})
      if (*c) (*c)->release_saved();
    for (auto* l : {&gk_proj_, &gk_up_, &g_proj_})
      if (*l) (*l)->release_saved();
    if (o_norm_) o_norm_->release_saved();
    core_.release_saved();
    q_pre_ = k_pre_ = gate_logits_ = gate_in_ = normed_ = Tensor();
  }
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;
  int num_states() const override { return 1; }
  int64_t halo_size() const override { return q_conv_ ? q_conv_->kernel() - 1 : 0; }

  // log(lambda_h) per head for the constant-decay kinds (LIGHTNING, RETNET); empty otherwise.
  const std::vector<double>& constant_log_decay() const { return log_lambda_; }

 private:
  Tensor project(Linear& proj, std::optional<ShortConv>& conv, const Tensor& xs);
  Tensor project_backward(Linear& proj, std::optional<ShortConv>& conv, const Tensor& d);
  // log_lambda_ as an [H] tensor of `dtype` on `device`, made once per device and dtype.
  const Tensor& constant_log_decay_tensor(Device device, DType dtype);

  config::MixerConfig::Kind kind_;
  int64_t heads_, dk_, dv_;
  double scale_;
  double gate_normalizer_ = 1;  // SIMPLE_GLA, GLA
  double lower_bound_ = 0;      // HGRN2
  kernels::Activation qk_act_ = kernels::Activation::kIdentity;
  kernels::Activation out_gate_act_ = kernels::Activation::kSilu;
  Linear q_proj_, k_proj_, v_proj_, o_proj_;  // HGRN2 names k_proj f_proj and v_proj i_proj
  std::optional<ShortConv> q_conv_, k_conv_, v_conv_;
  std::optional<Linear> gk_proj_;     // SIMPLE_GLA [H, D]; GLA's down projection [r, D]
  std::optional<Linear> gk_up_;       // GLA's up projection [H Dk, r]
  std::optional<Parameter> gk_bias_;  // SIMPLE_GLA [H], GLA [H Dk]
  std::optional<Linear> g_proj_;      // output gate
  std::optional<RMSNorm> o_norm_;
  GlaCore core_;
  std::vector<double> log_lambda_;
  Tensor log_lambda_tensor_;
  // Saved by the forward for the backward.
  Tensor q_pre_, k_pre_, gate_logits_, gate_in_, normed_;
};

// MAMBA2 (Dao & Gu 2024, SSD), one group of B/C shared by the heads:
//   [z, x, B, C, dt] = u W_in;  x, B, C = silu(conv(x, B, C));  dt = softplus(dt + dt_bias)
//   per head h: S_t = exp(-exp(A_log_h) dt_t) S_{t-1} + B_t^T (x_t dt_t),  o_t = C_t S_t + D_h x_t
//   y = W_out RMSNorm(o * silu(z))
class Mamba2 final : public TokenMixer {
 public:
  Mamba2(const MixerContext& ctx, const config::MixerConfig& m);
  void init(uint64_t seed, double std, double out_std) override;
  void collect(ParameterList& out) override;
  void release_saved() override {
    in_proj_.release_saved();
    out_proj_.release_saved();
    if (conv_) conv_->release_saved();
    if (norm_) norm_->release_saved();
    core_.release_saved();
    xbc_raw_ = xs_ = dt_in_ = dt_ = g_ = z_ = o_ = Tensor();
  }
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;
  int num_states() const override { return 1; }
  int64_t halo_size() const override { return conv_ ? conv_->kernel() - 1 : 0; }

 private:
  int64_t heads_, head_v_, state_, inner_;  // H, P (value width per head), N (B/C width), H P
  bool gate_;
  // Column offsets of in_proj's output: z (when gated), x, B, C, dt.
  int64_t col_x_, col_dt_, proj_width_;
  Linear in_proj_, out_proj_;
  std::optional<ShortConv> conv_;
  Parameter A_log_, dt_bias_, D_;
  std::optional<RMSNorm> norm_;
  GlaCore core_;
  // Saved by the forward for the backward.
  Tensor xbc_raw_, xs_, dt_in_, dt_, g_, z_, o_;
};

}  // namespace linea
