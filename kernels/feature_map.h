// Feature maps phi of basic linear attention, applied element-wise to q and k.
//   identity:  phi(x) = x                      phi'(x) = 1
//   elu+1:     phi(x) = x + 1 (x > 0), e^x     phi'(x) = 1 (x > 0), e^x
//   relu:      phi(x) = max(x, 0)              phi'(x) = 1 (x > 0), 0
// backward: dx = dy * phi'(x) (`=`). CPU f32/f64; CUDA f32/bf16, f32 arithmetic, current stream.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

enum class FeatureMap { kIdentity, kEluPlusOne, kRelu };

void feature_map_forward(FeatureMap f, const Tensor& x, Tensor& y);
void feature_map_backward(FeatureMap f, const Tensor& x, const Tensor& dy, Tensor& dx);

}  // namespace linea::kernels
