// Hedgehog's learned feature map (Zhang et al. 2024), per head h on rows of x [..., H, d] with a
// learned matrix W [H, d, f]:
//   z = x W_h                                   [..., H, f]
//   y = [ softmax(z), softmax(-z) ]             [..., H, 2f]   (each softmax over the f features)
// so every feature is positive and each row of y sums to 2. Softmax is max-shifted; sums in f64.
// backward: with p = y[:f], n = y[f:],
//   dz = p * (dp - sum(p dp)) - n * (dn - sum(n dn)),
//   dx (`=`) = dz W_h^T,  dW_h += x^T dz (accumulated over every row).
// y is what the forward returns and what the backward reads back (no other saved tensor).
// f32 or f64, one dtype; on CUDA f32 or bf16 with f32 arithmetic, dw f32 or the dtype of w
// (kernels/cuda/hedgehog_feature_map.cu).
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void hedgehog_feature_map_forward(const Tensor& x, const Tensor& w, Tensor& y);
void hedgehog_feature_map_backward(const Tensor& x, const Tensor& w, const Tensor& y,
                                   const Tensor& dy, Tensor& dx, Tensor& dw);

}  // namespace linea::kernels
