// The element-wise steps of Mamba2's SSD layer around its scalar-decay scan
// (core/modules/mixers/mamba2_mixer.cpp), per head h of H, rows r = (b, t):
//   ssd_heads_broadcast: out[r, h, :] = m[r, :]            (the one group of B or C every head
//   reads) ssd_heads_sum:       out[r, :] = sum_h d[r, h, :]      (its gradient partner)
//   ssd_discretise:      g[r, h] = -exp(A_log[h]) dt[r, h],  v[r, h, :] = x[r, h, :] dt[r, h]
//   ssd_add_skip:        o[r, h, :] += D[h] x[r, h, :]
//   ssd_discretise_backward (both of the last two, given dv, dg and dO):
//     dx = dv dt + D dO,  ddt = sum_p dv x - exp(A_log) dg           (written, `=`)
//     dA_log += sum_r dg g,  dD += sum_r sum_p dO x                   (accumulated)
// Shapes: m [B, T, N], d and out [B, T, H, N]; x, v, o, dv, dO, dx [B, T, H, P]; dt, g, dg, ddt
// [B, T, H]; A_log, D, dA_log, dD [H]. On the CPU every operand is f32 or f64 of one dtype, sums in
// f64; on CUDA the activations are f32 or bf16 of one dtype with f32 arithmetic, and A_log, D,
// dA_log, dD are f32 (the per-head sums over rows f64 in a fixed order: deterministic).
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void ssd_heads_broadcast(const Tensor& m, Tensor& out);
void ssd_heads_sum(const Tensor& d, Tensor& out);
void ssd_discretise(const Tensor& x, const Tensor& dt, const Tensor& A_log, Tensor& g, Tensor& v);
void ssd_add_skip(const Tensor& x, const Tensor& D, Tensor& o);
void ssd_discretise_backward(const Tensor& x, const Tensor& dt, const Tensor& g,
                             const Tensor& A_log, const Tensor& D, const Tensor& dv,
                             const Tensor& dg, const Tensor& d_o, Tensor& dx, Tensor& ddt,
                             Tensor& dA_log, Tensor& dD);

}  // namespace linea::kernels
