// LayerNorm over the last dimension D (rows = everything before it), with an optional affine:
// ReBased's normalisation of q and k before its quadratic kernel.
//   forward:  mean[r] = mean(x[r, :]);  rstd[r] = 1 / sqrt(mean((x[r, :] - mean[r])^2) + eps)
//             y[r, :] = (x[r, :] - mean[r]) * rstd[r] * gamma + beta
//             mean and rstd (dtype of x, shape = x's shape without D) are saved for the backward.
//   backward: x_hat = (x - mean) * rstd, g = dy * gamma,
//             dx (`=`) = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),
//             dgamma += sum_r dy * x_hat,  dbeta += sum_r dy  (accumulated, `+=`).
// gamma and beta [D] may each be undefined (scale 1, shift 0; their gradients are then ignored).
// Row reductions in f64. f32 or f64, one dtype. On CUDA (kernels/cuda/layernorm.cu): x, y, dy, dx
// f32 or bf16 with f32 arithmetic; mean, rstd, gamma, beta and their gradients f32.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                       Tensor& y, Tensor& mean, Tensor& rstd);
void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                        Tensor& dbeta);

}  // namespace linea::kernels
