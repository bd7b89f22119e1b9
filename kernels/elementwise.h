// Element-wise helpers used by the blocks and the optimizer (same shape and dtype everywhere).
//   add:        out = a + b            (residual connection; backward: both inputs get dout)
//   add_inplace: a += b
//   accumulate: a += b, or a = b (the same tensor, no copy) while a is undefined: the first of
//               several gradient contributions
//   axpy:       y += alpha * x
//   scale:      x *= alpha
//   sum_squares: sum of x^2 in f64 (gradient norms)
// CUDA: f32 or bf16 with f32 arithmetic on the current stream; sum_squares (f64 partials, fixed
// order) and all_finite wait for their result.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void add(const Tensor& a, const Tensor& b, Tensor& out);
void add_inplace(Tensor& a, const Tensor& b);
void accumulate(Tensor& a, const Tensor& b);
void axpy(double alpha, const Tensor& x, Tensor& y);
void scale(Tensor& x, double alpha);
double sum_squares(const Tensor& x);
// sums[index] = sum_squares(x), without waiting on CUDA (sums: an f64 tensor on x's device), so
// that the squares of many tensors come back in one read of `sums` (gradient norms).
void sum_squares_into(const Tensor& x, Tensor& sums, int64_t index);
// True when every element is finite.
bool all_finite(const Tensor& x);

}  // namespace linea::kernels
