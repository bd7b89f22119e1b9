// The token-mixer interface of a block (the "Mixer" of h = x + Mixer(RMSNorm(x))): linear mixers
// (L layers) and softmax attention (N layers) implement it. Input and output are [B, T, D].
// One factory with one switch over the config enum builds them (STYLE.md 10).
#pragma once

#include <memory>

#include "core/modules/module.h"
#include "linea.pb.h"

namespace linea {

class TokenMixer {
 public:
  virtual ~TokenMixer() = default;
  // std for input projections, out_std for the output projection.
  virtual void init(uint64_t seed, double std, double out_std) = 0;
  virtual Tensor forward(const Tensor& x) = 0;
  virtual Tensor backward(const Tensor& dy) = 0;
  virtual void collect(ParameterList& out) = 0;
};

// The mixer of layer `layer` (its letter in the resolved layer pattern decides the family).
// `prefix` is the checkpoint-name prefix, e.g. "layers.3.mixer".
std::unique_ptr<TokenMixer> make_token_mixer(const config::Config& cfg, int layer,
                                             const std::string& prefix, DType dtype);

}  // namespace linea
