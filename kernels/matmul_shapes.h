// Shape rules of the linear layer shared by the CPU and CUDA matmul kernels (kernels/matmul.h),
// so both backends accept and refuse the same shapes with the same messages.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

// Leading dimensions flattened into rows (from the shape, so a zero last dimension still counts).
inline int64_t rows_of(const Tensor& t) {
  int64_t r = 1;
  for (int64_t i = 0; i + 1 < t.ndim(); ++i) r *= t.dim(i);
  return r;
}

// t is [..., cols] with `rows` leading rows.
inline void check_linear_operand(const Tensor& t, int64_t cols, int64_t rows, const char* op,
                                 const char* name, const char* cols_name) {
  LINEA_CHECK(t.ndim() >= 1 && t.dim(-1) == cols)
      << op << ": " << name << " " << shape_str(t.shape()) << " must end in " << cols_name << " = "
      << cols;
  LINEA_CHECK(rows_of(t) == rows) << op << ": " << name << " " << shape_str(t.shape()) << " has "
                                  << rows_of(t) << " rows, expected " << rows;
}

// C = op(A) op(B) with 2-D a, b, c: the sizes M, N, K of op(a) [M, K], op(b) [K, N], c [M, N].
struct GemmSizes {
  int64_t m, n, k;
};
inline GemmSizes check_gemm_shapes(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
                                   const Tensor& c, const char* op) {
  LINEA_CHECK(a.ndim() == 2 && b.ndim() == 2 && c.ndim() == 2)
      << op << ": a " << shape_str(a.shape()) << ", b " << shape_str(b.shape()) << ", c "
      << shape_str(c.shape()) << " must all be 2-D";
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  LINEA_CHECK(k == kb && c.dim(0) == m && c.dim(1) == n)
      << op << ": op(a) " << (trans_a ? "a^T" : "a") << " of a " << shape_str(a.shape()) << " is ["
      << m << ", " << k << "], op(b) " << (trans_b ? "b^T" : "b") << " of b "
      << shape_str(b.shape()) << " is [" << kb << ", " << n << "], c is " << shape_str(c.shape())
      << "; need op(a) [M, K], op(b) [K, N], c [M, N]";
  return {m, n, k};
}

}  // namespace linea::kernels
