// Causal softmax attention (MHA / GQA) with a global position offset and an optional sliding
// window: the N layer's mixer core, and what LASP-2H runs on each rank after gathering K and V.
//
// q: [B, Tq, Hq, D]; k: [B, Tk, Hkv, D]; v: [B, Tk, Hkv, Dv]; o: [B, Tq, Hq, Dv];
// lse: [B, Hq, Tq]. Hq % Hkv == 0; query head h reads kv head h / (Hq / Hkv). f32 or f64, one
// dtype.
//
// Mask: query i sits at global position p = q_offset + i, key j at position j (0 .. Tk-1). Query i
// sees key j iff j <= p and, with window w > 0, also j > p - w (w keys including its own).
// Requires 0 <= q_offset and q_offset + Tq <= Tk, so every query sees at least its own key.
// LASP-2H: rank r of W holds Tq = T / W local queries, q_offset = r * Tq, and the keys of all ranks
// (or of ranks 0 .. r) gathered in rank order.
//
// forward:  s_ij = scale * q_i . k_j on visible keys; lse_i = log sum_j exp(s_ij) (max-shifted,
//           reduced in f64, stored in the input dtype); p_ij = exp(s_ij - lse_i); o_i = sum_j p_ij
//           v_j.
// backward: given q, k, v, o, lse and dO, with P recomputed from lse (flash-attention style):
//           D_i = dO_i . o_i,  dP = dO V^T,  dS = P * (dP - D),
//           dq = scale * dS K,  dk = scale * dS^T Q,  dv = P^T dO,
//           dk and dv summed over the Hq / Hkv query heads that share a kv head.
//           dq, dk, dv are written (`=`): LASP-2H reduce-scatters dk and dv afterwards.
// Scores and probability products go through BLAS per (batch, head, block of queries), over only
// the keys the block can see; row reductions (max, sum, D_i) in f64.
// CUDA tensors go to the flash-style kernels (kernels/cuda/softmax_attention.cu): f32 or bf16,
// lse f32, D = Dv in {64, 128}, scale > 0.
#pragma once

#include <cstdint>

#include "core/tensor/tensor.h"

namespace linea::kernels {

struct CausalMask {
  int64_t q_offset = 0;  // global position of query 0
  int64_t window = 0;    // 0: no window; else each query sees its last `window` positions
};

void softmax_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                               const CausalMask& mask, Tensor& o, Tensor& lse);

void softmax_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                                const Tensor& lse, const Tensor& d_o, double scale,
                                const CausalMask& mask, Tensor& dq, Tensor& dk, Tensor& dv);

}  // namespace linea::kernels
