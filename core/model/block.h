// A pre-norm block: h = x + Mixer(RMSNorm(x)), y = h + ChannelMixer(RMSNorm(h)).
// Parameter names: layers.<i>.attn_norm.weight, layers.<i>.mixer.*, layers.<i>.mlp_norm.weight,
// layers.<i>.mlp.* (Llama/Qwen-style, so checkpoints read naturally in PyTorch).
#pragma once

#include <memory>

#include "core/modules/channel_mixer.h"
#include "core/modules/mixers/token_mixer.h"
#include "core/modules/rmsnorm.h"

namespace linea {

class Block {
 public:
  // sp: the sequence-parallel group (null or size 1: no sequence parallelism); ep: the
  // expert-parallel group of an MoE channel mixer (null or size 1: every expert here).
  Block(const config::Config& cfg, int layer, DType dtype, parallel::Communicator* sp = nullptr,
        parallel::Communicator* ep = nullptr);
  void init(uint64_t seed, double std, double out_std);
  // With train.recompute, forward keeps only what the mode keeps (the block input, or the middle
  // residual h) and backward first runs the dropped part of the forward again.
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void collect(ParameterList& out);
  // Drops every activation the last forward saved (forward-only evaluation).
  void release_saved();
  // The block's MoE channel mixer, or null when it is dense.
  MoeLayer* moe() { return mlp_->moe(); }

 private:
  enum class Recompute { kNone, kSelective, kFull };
  Tensor mixer_half(const Tensor& x);    // h = x + Mixer(RMSNorm(x))
  Tensor channel_half(const Tensor& h);  // y = h + ChannelMixer(RMSNorm(h))
  void replay_channel_half();            // recomputes what channel_half saved

  Recompute recompute_ = Recompute::kNone;
  std::string mixer_label_, channel_label_;  // phase names ("L mixer", "moe"; phase_times.h)
  Tensor saved_x_, saved_h_;                 // the recomputation's starting points
  RMSNorm attn_norm_;
  std::unique_ptr<TokenMixer> mixer_;
  RMSNorm mlp_norm_;
  std::unique_ptr<ChannelMixer> mlp_;
};

}  // namespace linea
