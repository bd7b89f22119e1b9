// Matrix products (CPU: OpenBLAS sgemm/dgemm; f32 or f64, all operands one dtype).
//
// gemm:   C = alpha * op(A) @ op(B) + beta * C for 2-D row-major A, B, C, op = transpose or not.
// linear: y[N, out] = x[N, in] @ W[out, in]^T (weights stored as PyTorch's nn.Linear does).
//   backward: dx = dy @ W (written, `=`), dW += dy^T @ x (accumulated, `+=`).
// Leading dimensions of x/y may be any shape; they are flattened to N rows.
// CUDA (kernels/cuda/ops.h): cuBLAS on the current stream; f32 operands in full f32, bf16
// operands with f32 accumulation; the output (c, y, dx, dw) may be f32 for bf16 operands.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
          double alpha = 1.0, double beta = 0.0);

// y must be pre-allocated with x's leading shape and last dimension `out`.
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y);
// dx may be undefined (not needed); dw accumulates.
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw);

}  // namespace linea::kernels
