// RMSNorm over the last dimension D (rows = everything before it).
//   forward:  rstd[r] = 1 / sqrt(mean(x[r, :]^2) + eps);  y[r, :] = x[r, :] * rstd[r] * w
//             rstd (f32/f64 like x, shape [rows]) is saved for the backward.
//   backward: dx (`=`) = rstd * (w*dy - x_hat * mean(x_hat * w * dy)), x_hat = x * rstd;
//             dw += sum_r dy * x_hat (accumulated, `+=`). Row reductions in f64.
// w may be undefined for a weightless norm (then dw is ignored).
// CUDA: x, w, y, dy, dx f32 or bf16 (one dtype); rstd and dw f32; f32 row reductions; dw summed
// over per-block partials in a fixed order (deterministic); current stream.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw);

}  // namespace linea::kernels
