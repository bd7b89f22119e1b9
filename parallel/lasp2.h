// LASP-2 sequence parallelism for linear mixers (DESIGN.md, "One unified form"; Sun et al. 2025,
// "LASP-2: Rethinking Sequence Parallelism for Linear Attention and Its Hybrid").
//
// The ranks of an SP group hold contiguous, rank-ordered shards of the same sequences. A linear
// mixer maps its incoming state through each shard as S_out = A(S_in) + B, with A and B depending
// only on the shard's tokens. Lasp2Mixer wraps any linear TokenMixer:
//
// Forward on rank r of W:
//   1. halo: the last halo_size() rows of the previous rank's mixer input (send/recv chain; rank 0
//      has none, which is the sequence start);
//   2. local pass from zero states: the outputs of rank 0, and (A_r, B_r) on every rank;
//   3. one AllGather of (A_r, B_r) over the SP group (payload independent of sequence length:
//      per state B*H*Dk*Dv plus the size of A);
//   4. prefix composition S_in(r) = A_{r-1}(S_in(r-1)) + B_{r-1}, S_in(0) = 0;
//   5. ranks r > 0 recompute their outputs from S_in(r) (exact for every mixer, including GSA whose
//      outputs are not affine in S_in).
// Backward on rank r (the cotangent map is linear in (dy, dS_out)):
//   1. local backward with dS_out = 0: the input and parameter gradients from dy, and
//      c_r = dS_in(r) (it does not depend on dS_out);
//   2. one AllGather of c over the SP group (A is reused from the forward);
//   3. reverse composition dS_out(r) = c_{r+1} + A_{r+1}^T dS_out(r+1), dS_out(W-1) = 0;
//   4. ranks r < W-1 recompute the forward from S_in(r) and run the backward with dy = 0 and
//      dS_out(r), adding its input and parameter gradients (decays, gates, beta included);
//   5. the halo gradient goes back to the previous rank and is added to its last input rows.
// Bytes sent are counted by the communicator per collective kind; with logging at debug level each
// layer logs its payload.
#pragma once

#include <memory>

#include "core/modules/mixers/token_mixer.h"
#include "parallel/communicator.h"

namespace linea::parallel {

class Lasp2Mixer final : public TokenMixer {
 public:
  // sp is borrowed; name is used in debug logs (the layer's parameter prefix).
  Lasp2Mixer(std::unique_ptr<TokenMixer> inner, Communicator& sp, std::string name);

  void init(uint64_t seed, double std, double out_std) override {
    inner_->init(seed, std, out_std);
  }
  void collect(ParameterList& out) override { inner_->collect(out); }
  void release_saved() override {
    inner_->release_saved();
    x_ = halo_ = Tensor();
    s_in_.clear();
    all_transitions_.clear();
  }
  // The SP group holds whole sequences: `in` must carry no states or halo, and `out` gets none.
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;

  // Elements gathered per rank by the last forward (states and transitions).
  int64_t forward_payload_elements() const { return payload_elements_; }

 private:
  Tensor exchange_halo(const Tensor& x);
  void return_halo_grad(const Tensor& d_halo, Tensor& dx);
  SegmentIn segment_in(const std::vector<Tensor>& states) const;

  std::unique_ptr<TokenMixer> inner_;
  Communicator& sp_;
  std::string name_;
  // Saved by the forward for the backward.
  Tensor x_, halo_;
  std::vector<Tensor> s_in_;
  std::vector<std::vector<Transition>> all_transitions_;  // [rank][state]
  int64_t payload_elements_ = 0;
};

}  // namespace linea::parallel
