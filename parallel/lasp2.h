// LASP-2 sequence parallelism for linear mixers (DESIGN.md, "One unified form"; Sun et al. 2025,
// "LASP-2: Rethinking Sequence Parallelism for Linear Attention and Its Hybrid").
//
// The ranks of an SP group hold contiguous, rank-ordered shards of the same sequences. A linear
// mixer maps its incoming state through each shard as S_out = A(S_in) + B, with A and B depending
// only on the shard's tokens. Lasp2Mixer wraps any linear TokenMixer:
//
// The exchange happens inside the wrapped mixer, at each of its state cores
// (core/modules/mixers/state_exchange.h), so the projections, gates, norms and convolutions run
// once, and only the state-carrying kernel learns about the other ranks.
//
// Forward on rank r of W, per state core in the mixer's order:
//   0. (once per mixer) halo: the last halo_size() rows of the previous rank's mixer input
//      (send/recv chain; rank 0 has none, which is the sequence start);
//   1. the core's transition A_r and its final state from a zero state B_r (a state-only scan);
//   2. one AllGather of (A_r, B_r) over the SP group, started on the communicator's own stream
//      (NCCL) and overlapped with the core's scan from a zero state (the intra-chunk work and the
//      local inter-chunk state);
//   3. prefix composition S_in(r) = A_{r-1}(S_in(r-1)) + B_{r-1}, S_in(0) = 0;
//   4. the outputs get the incoming state's term: o += scale (q exp(b)) S_in exp(bv) for the
//      diagonal cores (kernels/state_output.h); the delta rule runs its scan again from S_in
//      (its outputs' dependence on S_in has no cheap closed form).
// Backward on rank r (the cotangent map is linear in (dy, dS_out)), per core in reverse order:
//   1. c_r = dS_in of the core's own outputs (with dS_out = 0): for the diagonal cores one GEMM a
//      head (kernels/state_output.h), for the delta rule a backward pass;
//   2. one AllGather of c over the SP group (A is kept from the forward);
//   3. reverse composition dS_out(r) = c_{r+1} + A_{r+1}^T dS_out(r+1), dS_out(W-1) = 0;
//   4. the core's backward from S_in(r) with dS_out(r): exact gradients of q, k, v, the decays,
//      gates and beta (through A as well);
//   5. (once per mixer) the halo gradient goes back to the previous rank and is added to its last
//      input rows.
// So a rank r > 0 pays a state-only scan and one GEMM a head more than a single GPU would, and
// the payload is independent of the sequence length (per state B*H*Dk*Dv plus the size of A).
// Mixers whose later inputs depend on earlier outputs (GSA's second pass reads the first pass's
// softmax) stay exact: each core has its true incoming state before it produces any output.
// Bytes sent are counted by the communicator per collective kind; with logging at debug level each
// layer logs its payload.
#pragma once

#include <memory>

#include "core/modules/mixers/state_exchange.h"
#include "core/modules/mixers/token_mixer.h"
#include "parallel/communicator.h"

namespace linea::parallel {

class Lasp2Exchange;

class Lasp2Mixer final : public TokenMixer {
 public:
  // sp is borrowed; name is used in debug logs (the layer's parameter prefix).
  Lasp2Mixer(std::unique_ptr<TokenMixer> inner, Communicator& sp, std::string name);
  ~Lasp2Mixer() override;

  void init(uint64_t seed, double std, double out_std) override {
    inner_->init(seed, std, out_std);
  }
  void collect(ParameterList& out) override { inner_->collect(out); }
  void release_saved() override;
  // The SP group holds whole sequences: `in` must carry no states or halo, and `out` gets none.
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;

  // Elements gathered per rank by the last forward (states and transitions).
  int64_t forward_payload_elements() const { return payload_elements_; }

 private:
  Tensor exchange_halo(const Tensor& x);
  void return_halo_grad(const Tensor& d_halo, Tensor& dx);

  std::unique_ptr<TokenMixer> inner_;
  Communicator& sp_;
  std::string name_;
  std::unique_ptr<Lasp2Exchange> exchange_;  // the gathers of the inner mixer's cores
  int64_t payload_elements_ = 0;
};

}  // namespace linea::parallel
