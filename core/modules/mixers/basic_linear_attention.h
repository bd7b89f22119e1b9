// Basic linear attention (Katharopoulos et al. 2020, "Transformers are RNNs") with every feature
// map of qk_feature_map.h (identity, elu+1, relu, Hedgehog, Based, ReBased, cosine), per head:
//   q = phi_q(x Wq), k = phi_k(x Wk), v = x Wv;  S_t = S_{t-1} + k_t^T v_t;  o_t = scale q_t S_t
//   y = Wo (RMSNorm_head(o) + o_win)
// The per-head output norm (optional) replaces every paper's normaliser (the denominator
// q_t sum_s k_s^T of Katharopoulos, Based, ReBased and Hedgehog; Cottention's division by a power
// of the position), as fla's LinearAttention does: docs/model/feature_maps.md says why.
// o_win is Based's sliding-window softmax branch (feature_map BASED with window_size w > 0): its
// own projections, RoPE, causal softmax over the last w tokens; it needs the w - 1 previous input
// rows of a segment (the halo).
// Parameters: <prefix>.q_proj.weight [H*dq, D], .k_proj.weight [H*dq, D], .v_proj.weight
// [H*dv, D], the feature map's own (qk_feature_map.h), .window_{q,k}_proj.weight [H*d, D] and
// .window_v_proj.weight [H*dv, D] (Based with a window), .o_norm.weight [dv] (when output_norm),
// .o_proj.weight [D, H*dv]; dq = the map's in_dim.
#pragma once

#include <optional>
#include <string>

#include "core/modules/linear.h"
#include "core/modules/mixers/mixer_factories.h"
#include "core/modules/mixers/qk_feature_map.h"
#include "core/modules/mixers/state_core.h"
#include "core/modules/rmsnorm.h"
#include "kernels/softmax_attention.h"

namespace linea {

class BasicLinearAttention final : public TokenMixer {
 public:
  BasicLinearAttention(const MixerContext& ctx, const config::MixerConfig& m);
  void init(uint64_t seed, double std, double out_std) override;
  void collect(ParameterList& out) override;
  void release_saved() override {
    phi_.release_saved();
    for (Linear* l : {&q_proj_, &k_proj_, &v_proj_, &o_proj_}) l->release_saved();
    if (o_norm_) o_norm_->release_saved();
    core_.release_saved();
    if (win_) {
      for (Linear* l : {&win_->q_proj, &win_->k_proj, &win_->v_proj}) l->release_saved();
      win_->q = win_->k = win_->v = win_->o = win_->lse = Tensor();
    }
  }
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;
  int num_states() const override { return 1; }
  int64_t halo_size() const override { return window_ > 0 ? window_ - 1 : 0; }

 private:
  // Based's sliding-window softmax branch: o_win [B, T, H, dv] from x and the halo rows.
  Tensor window_forward(const Tensor& x, const Tensor& halo);
  // Adds the branch's input gradient to dx; returns the halo's gradient (undefined without halo).
  Tensor window_backward(const Tensor& d_o, Tensor& dx);

  int64_t heads_, dk_, dv_, window_;
  QKFeatureMap phi_;
  Linear q_proj_, k_proj_, v_proj_, o_proj_;
  std::optional<RMSNorm> o_norm_;
  GlaCore core_;
  struct Window {
    Window(const std::string& prefix, int64_t hidden, int64_t qk_width, int64_t v_width,
           DType dtype);
    Linear q_proj, k_proj, v_proj;
    Tensor q, k, v, o, lse;  // after RoPE, saved for the backward
    kernels::CausalMask mask;
  };
  std::optional<Window> win_;
};

}  // namespace linea
