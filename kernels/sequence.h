// Moving rows along the time axis of [B, T, ...] tensors (halo handling of segments).
//   concat_time(a [B, Ta, ...], b [B, Tb, ...]) -> [B, Ta + Tb, ...]
//   slice_time(x, begin, end) -> [B, end - begin, ...] (a copy)
// CPU or CUDA tensors (on CUDA: pitched copies on the current stream). Gradient partners: the
// gradient of concat_time is two slice_time calls, and vice versa.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

Tensor concat_time(const Tensor& a, const Tensor& b);
Tensor slice_time(const Tensor& x, int64_t begin, int64_t end);

}  // namespace linea::kernels
