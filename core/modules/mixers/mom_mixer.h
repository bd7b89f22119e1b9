// Mixture-of-Memories (Du et al. 2025, "MoM: Linear Sequence Modeling with Mixture-of-Memories"),
// per head (docs/model/gsa_mom.md):
//   router:  r_t = softmax(x_t Wr) over M memories; the top-k (memory_top_k) are kept and their
//            weights renormalised over the k chosen: w_tj = r_tj / sum_{i chosen} r_ti;
//   inputs:  q_t = act(x Wq)_t shared by every memory; k^m_t = act(x Wk^m)_t, v^m_t = act(x Wv^m)_t
//            per memory m, act = causal short conv + SiLU (or SiLU alone with short_conv OFF),
//            both in token order; the delta kinds L2-normalise q and k;
//   memory:  S^m_t = update_kind(S^m_{t-1}; q, k^m_t, v^m_t, gate^m_t, beta^m_t) if token t is
//            routed to m, else S^m_t = S^m_{t-1}; the optional shared memory is updated by every
//            token with its own k/v/gate projections;
//   output:  o_t = sum_{m chosen by t} w_tm q_t S^m_t / sqrt(dk)  (+ q_t S^shared_t / sqrt(dk)),
//            y = Wo (RMSNorm_head(o) * swish(x Wg)).
// Each memory runs its state core (DeltaCore for GATED_DELTANET / DELTANET, GlaCore for GLA,
// SIMPLE_GLA, LINEAR_ATTENTION) on the compact subsequence of its routed tokens, batch rows padded
// to one length with steps that leave the state unchanged (k = v = q = 0, gate 0, beta 0); the
// outputs are scattered back. States: one per memory, then the shared memory's; a memory that
// receives no token of the segment has the identity transition.
// The top-k choice is piecewise constant: router gradients flow through the weights w only. The
// paper's load-balancing auxiliary loss is not computed here (MoE aux losses come with the MoE
// layer).
// Parameters (fla's MomAttention names; i = 0 .. M-1):
//   .q_proj.weight [H*dk, D], .gate.weight [M, D],
//   .k_proj.<i>.weight [H*dk, D], .v_proj.<i>.weight [H*dv, D] and the kind's gate projections
//   (.b_proj.<i>.weight [H, D] beta, .a_proj.<i>.weight [H, D] decay input, .gk_proj.<i>.*),
//   the shared memory's .shared_k / .shared_v / .shared_b / .shared_a / .shared_gk,
//   .A_log [H], .dt_bias [H] (GATED_DELTANET, shared by the memories),
//   .q_conv1d.weight [H*dk, K], .k_conv1d.weight [H*dk, K], .v_conv1d.weight [H*dv, K],
//   .g_proj.weight [H*dv, D], .o_norm.weight [dv], .o_proj.weight [D, H*dv].
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "core/modules/linear.h"
#include "core/modules/mixers/mixer_factories.h"
#include "core/modules/mixers/output_gate.h"
#include "core/modules/mixers/short_conv.h"
#include "core/modules/rmsnorm.h"

namespace linea {

// The tokens of one memory in one segment: for each batch row, the positions routed to it
// (ascending), and the common padded length of the compact subsequences.
// The gathers and scatters between the full and the compact sequences go by two i64 index tensors
// on the data's device (kernels/moe_permute.h's gather_rows/scatter_rows), made once per forward:
// full_index[j] = b T + rows[b][i] and compact_index[j] = b length + i for the j-th routed token.
struct MemoryRoute {
  std::vector<std::vector<int64_t>> rows;
  int64_t length = 0;
  Tensor full_index, compact_index;
  bool identity = false;  // every token in order (the shared memory): the compact is the full
};

class MomMemory;

class MixtureOfMemories final : public TokenMixer {
 public:
  MixtureOfMemories(const MixerContext& ctx, const config::MixerConfig& m);
  ~MixtureOfMemories() override;
  void init(uint64_t seed, double std, double out_std) override;
  void collect(ParameterList& out) override;
  void release_saved() override;
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;
  int num_states() const override { return static_cast<int>(memories_.size()); }
  int64_t halo_size() const override { return conv_size_ > 0 ? conv_size_ - 1 : 0; }

 private:
  void init_decay();

  int64_t heads_, dk_, dv_, num_memories_, top_k_, chunk_, conv_size_;
  bool delta_kind_;  // GATED_DELTANET / DELTANET: q and k are L2-normalised
  Linear q_proj_, gate_, o_proj_;
  std::optional<SwishOutputGate> out_gate_;
  std::optional<RMSNorm> o_norm_;
  std::optional<ShortConv> q_conv_, k_conv_, v_conv_;
  std::optional<Parameter> a_log_, dt_bias_;
  std::vector<std::unique_ptr<MomMemory>> memories_;  // routed ones, then the shared one
  // Saved for the backward.
  int64_t T_ = 0;
  Tensor qp_, q_act_, q_rstd_;        // q projection of [halo; x], after act, L2 rstd
  Tensor weights_;                    // [B*T*k] renormalised router weights (data dtype/device)
  std::vector<double> weights_host_;  // the same on the host
  std::vector<int32_t> chosen_;       // [B*T*k] memory of each choice
  std::vector<MemoryRoute> routes_;   // per memory (the shared one: every token)
  // The routed memories' compact outputs stacked as rows [sum_m B L_m, H dv], the row of each
  // choice in it (i32 [B*T*k], kernels/moe_permute.h's copy_row) and each memory's first row.
  Tensor routed_rows_, copy_row_;
  std::vector<int64_t> row_offset_;
};

}  // namespace linea
