// Softmax attention, the N layer of hybrid models: causal multi-head / grouped-query attention
// with RoPE (rotate-half) and optional qk-norm (Qwen3 / OLMo2), per query head h of Hq, with kv
// head g = h / (Hq / Hkv) and head width d:
//   q = x Wq, k = x Wk, v = x Wv                  (split into heads)
//   q, k <- RMSNorm_d(q), RMSNorm_d(k)             (qk_norm only; one weight [d] each, all heads)
//   q, k <- RoPE(q, pos), RoPE(k, pos)             pos = position_offset() + t
//   o_h = softmax(q_h k_g^T / sqrt(d) + causal (and window) mask) v_g
//   y = concat_h(o_h) Wo
// Parameters: <prefix>.q_proj.weight [Hq*d, D], .k_proj.weight [Hkv*d, D], .v_proj.weight
// [Hkv*d, D], .q_norm.weight [d] and .k_norm.weight [d] (qk_norm), .o_proj.weight [D, Hq*d].
// Equations and conventions: docs/model/softmax_attention.md.
//
// Segments: attention carries no recurrent state and needs no halo (num_states() = 0,
// halo_size() = 0). forward_segment attends over the segment's own keys only; what a segment
// needs from earlier ones is all of their K and V, which LASP-2H provides by communication.
//
// LASP-2H (DESIGN.md): the forward and backward are split into three steps each, so that a
// sequence-parallel wrapper can put the communication between them without touching the math.
// Rank r of W holds T_l = T / W contiguous tokens and sets position_offset = r * T_l:
//   forward:  Local l = project(x);                          // q, k, v with RoPE at global pos
//             K = all_gather_time(l.k), V = all_gather_time(l.v)   // rank order, [B, T, Hkv, d]
//             o = attend(l.q, K, V, /*keys_start=*/0);       // mask q_offset = position_offset
//             y = output(o);
//   backward: d_o = output_backward(dy);
//             AttendGrads g = attend_backward(d_o);          // dq local; dk, dv for all T keys
//             dk = reduce_scatter_time(g.dk), dv = reduce_scatter_time(g.dv)  // sum over ranks
//             dx = project_backward(g.dq, dk, dv);
// forward_segment / backward_segment are the same steps with no communication (keys_start =
// position_offset: the keys are the local ones). The LASP-2H change overrides
// TokenMixer::enable_sequence_parallel (until then it returns false, so parallel.sp > 1 with an N
// layer fails with a clear message), keeps the communicator, sets position_offset = rank * T_l in
// forward_segment and puts the collectives above between the steps.
//
// Recurrent-reference mode: attend() computes the attention with a naive loop over (query, key)
// pairs written in this module, independent of kernels/softmax_attention.h, so the mixer checks
// compare two implementations (on a GPU it runs in f64 on host copies of q, k, v). The backward
// always uses the kernel.
//
// Devices: every tensor is allocated on the input's device, and the kernels dispatch on it, so
// the mixer runs on CUDA tensors once its parameters are there (Model::to); lse is then f32.
#pragma once

#include <optional>

#include "core/modules/linear.h"
#include "core/modules/mixers/mixer_factories.h"
#include "core/modules/rmsnorm.h"
#include "kernels/softmax_attention.h"

namespace linea {

class SoftmaxAttention final : public TokenMixer {
 public:
  SoftmaxAttention(const MixerContext& ctx, const config::AttentionConfig& a);
  void init(uint64_t seed, double std, double out_std) override;
  void collect(ParameterList& out) override;
  void release_saved() override {
    for (Linear* l : {&q_proj_, &k_proj_, &v_proj_, &o_proj_}) l->release_saved();
    for (auto* n : {&q_norm_, &k_norm_})
      if (*n) (*n)->release_saved();
    q_ = k_ = v_ = o_ = lse_ = Tensor();
  }
  Tensor forward_segment(const Tensor& x, const SegmentIn& in, SegmentOut* out) override;
  Tensor backward_segment(const Tensor& dy, const SegmentGradIn& in, SegmentGradOut* out) override;
  // LASP-2H: from now on forward/backward treat x as this rank's shard of sequences split over
  // `sp` (position offset rank * T_l, K and V gathered, dK and dV reduce-scattered).
  bool enable_sequence_parallel(parallel::Communicator& sp) override;

  // Global position of the first local token (RoPE angles and, under LASP-2H, the causal mask).
  // Set before a forward; keep it until that forward's backward has run.
  void set_position_offset(int64_t offset);
  int64_t position_offset() const { return position_offset_; }

  // Step 1. x [B, T, D] -> q [B, T, Hq, d], k and v [B, T, Hkv, d]; q and k normed (qk_norm) and
  // rotated at positions position_offset() + t. Saves what project_backward needs.
  struct Local {
    Tensor q, k, v;
  };
  Local project(const Tensor& x);
  // Step 2. Local queries attend causally to keys/values [B, Tk, Hkv, d] whose first row sits at
  // global position keys_start (<= position_offset(), and the keys must reach the last local
  // query). Returns o [B, T, Hq, d]; saves q, k, v, o and lse.
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, int64_t keys_start);
  // Step 3. o [B, T, Hq, d] -> y [B, T, D].
  Tensor output(const Tensor& o);

  // Backward partners of the three steps, in reverse order. attend_backward writes dk and dv for
  // every key it attended to (shaped like attend's k and v): summing them over the ranks that
  // share those keys is the caller's job (reduce-scatter). Parameter gradients accumulate (`+=`).
  Tensor output_backward(const Tensor& dy);
  struct AttendGrads {
    Tensor dq, dk, dv;
  };
  AttendGrads attend_backward(const Tensor& d_o);
  Tensor project_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv);

  int64_t num_heads() const { return heads_; }
  int64_t num_kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }

 private:
  kernels::CausalMask mask_for(int64_t keys_start, int64_t tq, int64_t tk) const;

  int64_t hidden_, heads_, kv_heads_, head_dim_;
  double rope_theta_;
  int64_t window_;
  int64_t position_offset_ = 0;
  parallel::Communicator* sp_ = nullptr;  // LASP-2H group (null: no sequence parallelism)
  Linear q_proj_, k_proj_, v_proj_, o_proj_;
  std::optional<RMSNorm> q_norm_, k_norm_;
  // Saved by attend() for attend_backward().
  Tensor q_, k_, v_, o_, lse_;
  kernels::CausalMask mask_;
};

}  // namespace linea
