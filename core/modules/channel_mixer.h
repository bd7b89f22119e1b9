// The channel mixer of a block (y = h + ChannelMixer(RMSNorm(h))): the dense SwiGLU MLP or a
// mixture of experts, chosen per layer by model.channel_mixer (make_channel_mixer in
// core/model/block.cpp). Forward and backward follow the module contract (core/modules/module.h).
#pragma once

#include "core/modules/parameter.h"

namespace linea {

class MoeLayer;

class ChannelMixer {
 public:
  virtual ~ChannelMixer() = default;
  virtual void init(uint64_t seed, double std, double out_std) = 0;
  // x [..., D] -> [..., D]; saves what backward needs.
  virtual Tensor forward(const Tensor& x) = 0;
  // dy [..., D] -> dx [..., D]; accumulates (`+=`) into parameter gradients.
  virtual Tensor backward(const Tensor& dy) = 0;
  virtual void collect(ParameterList& out) = 0;
  // Drops every activation the last forward saved, so that activation recomputation
  // (train.recompute) keeps only the block inputs between forward and backward; the next forward
  // saves them again.
  virtual void release_saved() = 0;
  // What recomputation drops before it replays the forward: everything by default; the MoE layer
  // keeps its routing and dispatch plan (small), and its replay reuses them.
  virtual void release_for_replay() { release_saved(); }
  // The MoE layer behind this mixer, or null for a dense one (statistics, aux-loss scale, bias).
  virtual MoeLayer* moe() { return nullptr; }
};

}  // namespace linea
