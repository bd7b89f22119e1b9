// The per-token, per-head scalars of the delta-rule mixers (DeltaNet, Gated DeltaNet), element-wise
// over [..., H] tensors (H = last dimension, the head):
//
//   writing strength: beta = scale * sigmoid(b),   scale 1 -> beta in (0, 1), scale 2 -> (0, 2)
//                     (2 lets I - beta k^T k have the negative eigenvalue 1 - beta, Grazzi et al.
//                     2024); backward: db = dbeta * scale * s (1 - s), s = sigmoid(b)   (`=`).
//   log decay (Mamba2's parametrisation, Gated DeltaNet's alpha = exp(g)):
//                     g = -exp(A_log[h]) * softplus(a + dt_bias[h])   (<= 0)
//                     backward: da = dg * -exp(A_log[h]) * sigmoid(a + dt_bias[h])          (`=`)
//                               d_dt_bias[h] += sum over rows of da;
//                               dA_log[h]    += sum over rows of dg * g                     (`+=`)
//
// Stable forms: sigmoid(x) = 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below, and
// softplus(x) = max(x, 0) + log1p(e^-|x|), so no exponent is ever positive. Element math and the
// parameter-gradient sums in f64; f32 or f64 tensors, one dtype a call; CPU.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void delta_beta_forward(const Tensor& b, double scale, Tensor& beta);
void delta_beta_backward(const Tensor& b, double scale, const Tensor& dbeta, Tensor& db);

// a, g, da, dg: [..., H]; A_log, dt_bias and their gradients: [H].
void delta_log_decay_forward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                             Tensor& g);
void delta_log_decay_backward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                              const Tensor& dg, Tensor& da, Tensor& dA_log, Tensor& d_dt_bias);

}  // namespace linea::kernels
