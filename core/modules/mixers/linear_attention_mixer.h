// Basic linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), per head:
//   q = phi(x Wq), k = phi(x Wk), v = x Wv;  S_t = S_{t-1} + k_t^T v_t;  o_t = q_t S_t / sqrt(dk)
//   y = Wo RMSNorm_head(o)   (the per-head output norm is optional; it keeps the unnormalised
//                              sum stable, as in fla's LinearAttention with norm on the output)
// Computed with the chunked kernel (kernels/linear_attention.h). Parameters:
//   <prefix>.q_proj.weight [H*dk, D], .k_proj.weight [H*dk, D], .v_proj.weight [H*dv, D],
//   .o_norm.weight [dv] (when output_norm), .o_proj.weight [D, H*dv].
#pragma once

#include <optional>

#include "core/modules/linear.h"
#include "core/modules/mixers/token_mixer.h"
#include "core/modules/rmsnorm.h"
#include "kernels/feature_map.h"

namespace linea {

struct LinearAttentionOptions {
  int64_t hidden = 0, heads = 0, head_dim = 0, chunk = 64;
  kernels::FeatureMap feature_map = kernels::FeatureMap::kIdentity;
  bool output_norm = true;
  double norm_eps = 1e-6;
};

class LinearAttentionMixer final : public TokenMixer {
 public:
  LinearAttentionMixer(const std::string& prefix, const LinearAttentionOptions& opt, DType dtype);
  void init(uint64_t seed, double std, double out_std) override;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  void collect(ParameterList& out) override;

 private:
  LinearAttentionOptions opt_;
  Linear q_proj_, k_proj_, v_proj_, o_proj_;
  std::optional<RMSNorm> o_norm_;
  Tensor q_, k_, fq_, fk_, v_;  // saved for the backward
};

}  // namespace linea
