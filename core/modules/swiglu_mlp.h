// The dense channel mixer: SwiGLU MLP, y = down(silu(gate(x)) * up(x)) (Llama/Qwen layout and
// names: "<prefix>.gate_proj.weight", ".up_proj.weight", ".down_proj.weight").
#pragma once

#include "core/modules/channel_mixer.h"
#include "core/modules/linear.h"

namespace linea {

class SwiGLUMLP : public ChannelMixer {
 public:
  SwiGLUMLP(const std::string& name, int64_t hidden, int64_t intermediate, DType dtype);
  void init(uint64_t seed, double std, double out_std) override;
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  void collect(ParameterList& out) override;
  void release_saved() override {
    gate_.release_saved();
    up_.release_saved();
    down_.release_saved();
    g_ = u_ = Tensor();
  }

 private:
  Linear gate_, up_, down_;
  Tensor g_, u_;
};

}  // namespace linea
