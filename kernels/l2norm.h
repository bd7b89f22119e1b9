// L2 normalisation over the last dimension D (rows = everything before it), no weight: qk-norm,
// DeltaNet's q/k normalisation, Cottention's cosine feature map.
//   forward:  rstd[r] = 1 / sqrt(sum(x[r, :]^2) + eps);  y[r, :] = x[r, :] * rstd[r]
//             rstd (dtype of x, shape = x's shape without D) is saved for the backward.
//   backward: dx (`=`) = rstd * (dy - y * sum(y * dy)), y = x * rstd.
// eps sits inside the root, so a zero row maps to zero with a finite gradient (rstd = eps^-1/2).
// Row reductions in f64. f32 or f64. CUDA: x, y, dy, dx f32 or bf16, rstd f32, f32 row sums.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void l2norm_forward(const Tensor& x, double eps, Tensor& y, Tensor& rstd);
void l2norm_backward(const Tensor& x, const Tensor& rstd, const Tensor& dy, Tensor& dx);

}  // namespace linea::kernels
