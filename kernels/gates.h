// The element-wise gates of the token mixers, forward and backward side by side, one dtype a call:
// CPU f32 or f64, every formula evaluated in f64 and rounded once; CUDA (kernels/cuda/gates.cu)
// f32 or bf16 evaluated in f32 on the current stream, with dA_log and d_dt_bias f32.
//
// Activations and output gates (decay mixers, Mamba2, GSA, MoM):
//   act(x):            identity, silu(x) = x sigmoid(x), sigmoid(x)
//   activation:        y = act(x);                 backward dx = dy act'(x)
//   output gate:       y = n act(g);               backward dg = dy n act'(g),  dn = dy act(g)
// Log-space decay gates:
//   log-sigmoid decay: gk = logsigmoid(z) / c      (GLA, SIMPLE_GLA, GSA, MoM; c the normalizer)
//                      backward dz = dgk sigmoid(-z) / c
//   forget gate:       f = lb + (1 - lb) sigmoid(z), gk = log f, k = 1 - f = (1 - lb) sigmoid(-z)
//                      (HGRN2); backward dz = dgk dlog f/dz + dk dk/dz
//   softplus:          y = softplus(z);            backward dz = dy sigmoid(z)
// The delta-rule scalars (DeltaNet, Gated DeltaNet, MoM's delta memories), over [..., H] (H = last
// dimension, the head):
//   writing strength:  beta = scale * sigmoid(b),   scale 1 -> beta in (0, 1), scale 2 -> (0, 2)
//                      (2 lets I - beta k^T k have the negative eigenvalue 1 - beta, Grazzi et al.
//                      2024); backward: db = dbeta * scale * s (1 - s), s = sigmoid(b).
//   log decay (Mamba2's parametrisation, Gated DeltaNet's alpha = exp(g)):
//                      g = -exp(A_log[h]) * softplus(a + dt_bias[h])   (<= 0)
//                      backward: da = dg * -exp(A_log[h]) * sigmoid(a + dt_bias[h])
//                                d_dt_bias[h] += sum over rows of da;
//                                dA_log[h]    += sum over rows of dg * g
//
// Gradient rule: input gradients are written (`=`), parameter gradients (dA_log, d_dt_bias)
// accumulated (`+=`), their row sums in f64. Stable forms: sigmoid(x) = 1 / (1 + e^-x) for x >= 0
// and e^x / (1 + e^x) below, softplus(x) = max(x, 0) + log1p(e^-|x|), logsigmoid(x) = -softplus(-x)
// by branch, so no exponent is ever positive.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

enum class Activation { kIdentity, kSilu, kSigmoid };

// x, y, dy, dx one shape.
void activation_forward(Activation a, const Tensor& x, Tensor& y);
void activation_backward(Activation a, const Tensor& x, const Tensor& dy, Tensor& dx);

// g, n, y and the gradients one shape.
void output_gate_forward(Activation a, const Tensor& g, const Tensor& n, Tensor& y);
void output_gate_backward(Activation a, const Tensor& g, const Tensor& n, const Tensor& dy,
                          Tensor& dg, Tensor& dn);

// z, gk, dgk, dz one shape; normalizer c > 0.
void log_sigmoid_decay_forward(const Tensor& z, double normalizer, Tensor& gk);
void log_sigmoid_decay_backward(const Tensor& z, const Tensor& dgk, double normalizer, Tensor& dz);

// 0 <= lower_bound < 1; every tensor shaped like z.
void forget_gate_forward(const Tensor& z, double lower_bound, Tensor& gk, Tensor& k);
void forget_gate_backward(const Tensor& z, double lower_bound, const Tensor& dgk, const Tensor& dk,
                          Tensor& dz);

void softplus_forward(const Tensor& z, Tensor& y);
void softplus_backward(const Tensor& z, const Tensor& dy, Tensor& dz);

void delta_beta_forward(const Tensor& b, double scale, Tensor& beta);
void delta_beta_backward(const Tensor& b, double scale, const Tensor& dbeta, Tensor& db);

// a, g, da, dg: [..., H]; A_log, dt_bias and their gradients: [H].
void delta_log_decay_forward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                             Tensor& g);
void delta_log_decay_backward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                              const Tensor& dg, Tensor& da, Tensor& dA_log, Tensor& d_dt_bias);

}  // namespace linea::kernels
