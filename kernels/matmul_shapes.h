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

}  // namespace linea::kernels
