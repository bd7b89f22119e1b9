// The feature map phi that basic linear attention applies to each head's query and key rows:
// [B, T, H, in_dim] -> [B, T, H, out_dim]. It may widen the rows (out_dim is the key width Dk of
// the state) and may carry learned parameters. One object serves both sides; each side saves its
// own input for its backward. docs/model/feature_maps.md has every map's equations.
//
//   map           in_dim (projection)  out_dim        parameters                core scale
//   IDENTITY      head_dim             head_dim       -                         1/sqrt(d)
//   ELU_PLUS_ONE  head_dim             head_dim       -                         1/sqrt(d)
//   RELU          head_dim             head_dim       -                         1/sqrt(d)
//   HEDGEHOG      head_dim             2 f            feature_map_{q,k}.weight  1
//   BASED         f                    1 + f + f^2    -                         1
//   REBASED       f                    f^2            feature_map.{gamma,beta}  1
//   COSINE        head_dim             head_dim       -                         1
// (f = feature_dim.) The learned maps carry their own scaling (Based's Taylor terms, ReBased's
// 1/sqrt(f)), so the state core runs with scale 1 for them; the element-wise maps keep the
// 1/sqrt(d) of Katharopoulos et al. The cosine map's output is cos(q, k) with no temperature, as in
// Cottention.
#pragma once

#include <optional>
#include <string>

#include "core/modules/module.h"
#include "kernels/feature_map.h"
#include "linea.pb.h"

namespace linea {

class QKFeatureMap {
 public:
  enum Side { kQuery = 0, kKey = 1 };

  // `prefix` is the mixer's checkpoint prefix; eps is the LayerNorm / L2-norm epsilon.
  QKFeatureMap(const std::string& prefix, const config::MixerConfig& m, int64_t heads,
               int64_t head_dim, double eps, DType dtype);
  int64_t in_dim() const { return in_dim_; }
  int64_t out_dim() const { return out_dim_; }
  double scale() const { return scale_; }
  void init(uint64_t seed);
  void collect(ParameterList& out);
  void release_saved() {
    for (Saved& s : saved_) s = Saved{};
  }

  // x [B, T, H, in_dim] -> [B, T, H, out_dim]; saves what the backward of this side needs.
  Tensor forward(Side side, const Tensor& x);
  // dy [B, T, H, out_dim] -> dx; accumulates (`+=`) into the map's parameter gradients (ReBased's
  // gamma and beta receive the sum of both sides). Releases the side's saved tensors.
  Tensor backward(Side side, const Tensor& dy);

 private:
  config::MixerConfig::FeatureMap map_;
  int64_t in_dim_, out_dim_;
  double scale_, eps_;
  std::optional<Parameter> hedgehog_[2];   // HEDGEHOG: W [H, head_dim, feature_dim] per side
  std::optional<Parameter> gamma_, beta_;  // REBASED: shared by q and k, [feature_dim]
  struct Saved {
    Tensor x, y, mean, rstd, u;
  } saved_[2];
};

}  // namespace linea
