// Short causal depthwise convolution over time (kernel K, typically 4), as Mamba2 and the DeltaNet
// family put on q, k, v, with an optional SiLU:
//   y[b, t, c] = act( sum_{j=0}^{K-1} w[c, j] * x[b, t - K + 1 + j, c] ),  x[b, t < 0, c] = 0.
// x, y: [B, T, C]; w: [C, K]. A segment that continues a sequence prepends the previous segment's
// last rows to x (the halo) and drops the first outputs.
// backward: dx (`=`), dw (`+=`). f32/f64 on the CPU; on CUDA f32/bf16 with f32 arithmetic, dw f32
// or the dtype of w, K <= 8 (kernels/cuda/short_conv.cu).
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void short_conv_forward(const Tensor& x, const Tensor& w, bool silu, Tensor& y);
void short_conv_backward(const Tensor& x, const Tensor& w, bool silu, const Tensor& dy, Tensor& dx,
                         Tensor& dw);

}  // namespace linea::kernels
