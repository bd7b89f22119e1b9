// The element-wise steps of Gated Slot Attention (core/modules/mixers/gsa_mixer.cpp) around its
// two gated scans, on [B, T, H, M] tensors of M memory slots per head (rows = all but the last
// dimension):
//   gsa_slot_write_forward:  w = 1 - alpha = -expm1(log_alpha)   (the slot write weight; expm1
//                            keeps its precision for alpha near 1)
//   gsa_slot_write_backward: d_log_alpha_total = d_log_alpha - exp(log_alpha) d_w
//                            (the gradient reaching log alpha as the decay and through w)
//   gsa_slot_softmax_forward:  p[r, :] = softmax(s[r, :]) over the M slots (max-shifted)
//   gsa_slot_softmax_backward: ds = p * (dp - sum(p dp))
// Every output is written (`=`), one dtype a call: f32 or f64 on the CPU (evaluated in f64), f32
// or bf16 on CUDA (f32 arithmetic).
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void gsa_slot_write_forward(const Tensor& log_alpha, Tensor& w);
void gsa_slot_write_backward(const Tensor& log_alpha, const Tensor& d_log_alpha, const Tensor& d_w,
                             Tensor& d_total);
void gsa_slot_softmax_forward(const Tensor& s, Tensor& p);
void gsa_slot_softmax_backward(const Tensor& p, const Tensor& dp, Tensor& ds);

}  // namespace linea::kernels
