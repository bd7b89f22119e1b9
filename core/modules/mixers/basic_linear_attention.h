// Basic linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), per head:
//   q = phi(x Wq), k = phi(x Wk), v = x Wv;  S_t = S_{t-1} + k_t^T v_t;  o_t = q_t S_t / sqrt(dk)
//   y = Wo RMSNorm_head(o)   (the per-head output norm is optional; it replaces the paper's
//                              denominator, as fla's LinearAttention does)
// Parameters: <prefix>.q_proj.weight [H*dk, D], .k_proj.weight [H*dk, D], .v_proj.weight
// [H*dv, D], .o_norm.weight [dv] (when output_norm), .o_proj.weight [D, H*dv].
#pragma once

#include <optional>

#include "core/modules/linear.h"
#include "core/modules/mixers/mixer_factories.h"
#include "core/modules/mixers/state_core.h"
#include "core/modules/rmsnorm.h"
#include "kernels/feature_map.h"

namespace linea {

class BasicLinearAttention final : public TokenMixer {
 public:
  BasicLinearAttention(const MixerContext& ctx, const config::MixerConfig& m);
  void init(uint64_t seed, double std, double out_std) override;
  void collect(ParameterList& out) override;
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;
  int num_states() const override { return 1; }

 private:
  int64_t heads_, dk_, dv_;
  kernels::FeatureMap feature_map_;
  Linear q_proj_, k_proj_, v_proj_, o_proj_;
  std::optional<RMSNorm> o_norm_;
  GlaCore core_;
  Tensor q_, k_;  // pre-feature-map, saved for the backward
};

}  // namespace linea
