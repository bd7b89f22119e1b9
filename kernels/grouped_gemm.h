// Grouped linear products: one weight per group of consecutive rows (the MoE experts, each on its
// contiguous row block). counts[e] (host values, 0 allowed) rows of x belong to group e, in
// order; their sum is the number of rows R.
//
//   forward:  y[rows of e] = x[rows of e] w[e]^T                         (`=`)
//   backward: dx[rows of e] = dy[rows of e] w[e]                         (`=`; dx may be undefined)
//             dw[e P + p] += dy[rows of e][:, p o : (p + 1) o]^T x[rows of e]   (`+=`)
// with x [R, in], w [E, out, in] (E = counts.size()), y and dy [R, out], dx [R, in], and dw
// either empty (no weight gradient) or E * P tensors [o, in], o = out / P: group e's gradient
// split by rows into P parts (the MoE layer's gate and up weights are one stacked [2F, D] operand
// with two separate gradients, P = 2). Groups with 0 rows write nothing and add nothing.
//
// CPU: f32/f64, one dtype for all tensors; each group runs linear_forward/backward (BLAS).
// CUDA: x, w, dy, y and dx of one dtype (f32, or bf16 with f32 accumulation); dw f32 or that
// dtype. y and dx: cublasGemmGroupedBatchedEx, one call for all non-empty groups (128 groups a
// call; the pointer arrays written on the device by one small kernel, so nothing waits); dw: one
// cublasGemmEx per group and part (an f32 output from bf16 operands is outside the grouped
// call's type table). Where cuBLAS answers CUBLAS_STATUS_NOT_SUPPORTED to a grouped call, its
// groups run one cublasGemmEx each. LINEA_GROUPED_GEMM=loop runs y and dx as one cublasGemmEx per
// group throughout (the benchmark compares both). Work goes on the current stream; nothing waits.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor/tensor.h"

namespace linea::kernels {

void grouped_linear_forward(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts,
                            Tensor& y);
void grouped_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy,
                             const std::vector<int64_t>& counts, Tensor& dx,
                             const std::vector<Tensor>& dw);

}  // namespace linea::kernels
