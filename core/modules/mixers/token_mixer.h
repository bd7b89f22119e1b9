// The token-mixer interface of a block (the "Mixer" of h = x + Mixer(RMSNorm(x))): linear mixers
// (L layers) and softmax attention (N layers) implement it. Input and output are [B, T, D].
// One factory with one switch over the config enum builds them (STYLE.md 10).
//
// Besides the plain forward/backward, every mixer runs on a segment of a longer sequence
// (segment.h): it accepts incoming states and a halo, and reports its final states and its
// transitions; its backward accepts the gradients reaching the final states and returns those of
// the incoming states and the halo. Chunked training uses the plain calls; LASP-2 sequence
// parallelism and the segment tests use the segment calls.
#pragma once

#include <memory>

#include "core/modules/mixers/segment.h"
#include "core/modules/module.h"
#include "linea.pb.h"

namespace linea {

namespace parallel {
class Communicator;
}

class TokenMixer {
 public:
  virtual ~TokenMixer() = default;
  // std for input projections, out_std for the output projection.
  virtual void init(uint64_t seed, double std, double out_std) = 0;
  virtual void collect(ParameterList& out) = 0;
  // Drops every activation the last forward saved (activation recomputation, train.recompute:
  // the block runs forward again before its backward). Parameters and gradients stay.
  virtual void release_saved() = 0;

  Tensor forward(const Tensor& x) { return forward_segment(x, SegmentIn{}, nullptr); }
  Tensor backward(const Tensor& dy) { return backward_segment(dy, SegmentGradIn{}, nullptr); }

  // x [B, T, D] -> y [B, T, D]; `out` (may be null) receives final states and transitions.
  virtual Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) = 0;
  // dy [B, T, D] -> dx; `out` (may be null) receives the gradients of incoming states and halo.
  // Accumulates (`+=`) into parameter gradients.
  virtual Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in,
                                  SegmentGradOut* out) = 0;

  // States carried across segments ([B, H, Dk, Dv] each) and halo rows needed from the previous
  // segment.
  virtual int num_states() const { return 0; }
  virtual int64_t halo_size() const { return 0; }

  // Reference mode: the forward uses the token-by-token recurrent kernels (tests compare the
  // chunked backward with finite differences of this forward). Off by default.
  void set_recurrent_reference(bool on) { recurrent_reference_ = on; }

  // Sequence parallelism for mixers that need more than states and a halo from earlier ranks
  // (softmax attention: LASP-2H). Linear mixers return false: the model wraps them in
  // parallel::Lasp2Mixer instead. `sp` is borrowed for the mixer's lifetime.
  virtual bool enable_sequence_parallel(parallel::Communicator& sp) { return false; }

 protected:
  bool recurrent_reference_ = false;
};

// The mixer of layer `layer` (its letter in the resolved layer pattern decides the family).
// `prefix` is the checkpoint-name prefix, e.g. "layers.3.mixer".
std::unique_ptr<TokenMixer> make_token_mixer(const config::Config& cfg, int layer,
                                             const std::string& prefix, DType dtype);

// The mixer settings of L layer `layer`: model.mixer with that layer's override merged over it.
config::MixerConfig mixer_config_for_layer(const config::Config& cfg, int layer);

}  // namespace linea
