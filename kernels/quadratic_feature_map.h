// Polynomial feature maps of degree 2 on the last dimension d (rows = everything before it), whose
// inner products are polynomials of q . k: Based's 2nd-order Taylor expansion of exp and ReBased's
// quadratic kernel.
//   y[r, :] = [ c0 (when constant),  c1 x[r, :] (when c1 != 0),  c2 (x[r, :] ⊗ x[r, :]) ]
// the outer product flattened row-major (index i * d + j holds x_i x_j). Width:
// (constant ? 1 : 0) + (c1 != 0 ? d : 0) + d^2. Then for two rows q, k:
//   phi(q) . phi(k) = c0^2 + c1^2 (q . k) + c2^2 (q . k)^2.
// The full d x d product is kept (not the d(d+1)/2 distinct pairs): the state is wider, but the
// map stays one line of algebra, and the chunked kernels do not care.
// backward: dx_i (`=`) = c1 dy_lin_i + c2 sum_j (dy_ij + dy_ji) x_j. f32 or f64, one dtype
// (on CUDA f32 or bf16 with f32 arithmetic, d <= 4096).
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

struct QuadraticFeatureMap {
  bool constant = false;  // prepend the constant feature c0 = 1
  double linear = 0;      // c1; 0 omits the linear block
  double quadratic = 1;   // c2
};

int64_t quadratic_feature_dim(const QuadraticFeatureMap& f, int64_t d);

// x [..., d] -> y [..., quadratic_feature_dim(f, d)].
void quadratic_feature_map_forward(const QuadraticFeatureMap& f, const Tensor& x, Tensor& y);
void quadratic_feature_map_backward(const QuadraticFeatureMap& f, const Tensor& x, const Tensor& dy,
                                    Tensor& dx);

}  // namespace linea::kernels
