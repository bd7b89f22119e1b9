// MoE row movement (core/modules/moe, parallel/expert_dispatch): the gathers and weighted sums
// that carry token rows to their experts and back, the shared-expert gate, and plain row
// gathers/scatters by index. Forward and backward side by side.
//
// Copies: token t's j-th choice is copy c = t * top_k + j. A dispatch plan (token_permutation.h)
// gives row_copy [R] (the copy of each permuted row) and copy_row [N * top_k] (the row of each
// copy, -1 when the capacity dropped it), both i32 on the data's device.
//
// Dtypes: on the CPU data are f32 or f64 and weight/dweight/gate share the data's dtype; on CUDA
// data are f32 or bf16, weight/dweight/gate are f32, arithmetic is f32, and the token side and the
// row side may differ in dtype (one f32, the other bf16: converted on the way): x and rows of
// moe_permute, dx and drows of its backward, rows and out of the combine, dy and rows (= drows'
// dtype) of its backward. Sums over the k copies of
// a token run in j order and dot products are one fixed-order reduction per copy: every result is
// deterministic (no atomics). Gradient rules: moe_permute_backward adds (`+=`) into dx; every other
// output is written (`=`). CUDA work goes on the device's current stream; nothing waits for it.
#pragma once

#include <cstdint>

#include "core/tensor/tensor.h"

namespace linea::kernels {

// rows[r] = x[row_copy[r] / top_k]. x [N, D], rows [R, D].
void moe_permute(const Tensor& x, const Tensor& row_copy, int64_t top_k, Tensor& rows);
// dx[t] += sum_{j < k, copy_row[t k + j] >= 0} drows[copy_row[t k + j]]. dx [N, D], drows [R, D].
void moe_permute_backward(const Tensor& drows, const Tensor& copy_row, int64_t top_k, Tensor& dx);

// out[t] = sum_{j < k} weight[c] rows[copy_row[c]] over the kept copies c = t k + j (0 when none).
// rows [R, D], weight [N k], out [N, D]; N = copy_row.numel() / top_k.
void moe_unpermute_combine(const Tensor& rows, const Tensor& copy_row, const Tensor& weight,
                           int64_t top_k, Tensor& out);
// drows[copy_row[c]] = weight[c] dy[t]; dweight[c] = <dy[t], rows[copy_row[c]]>, 0 when dropped.
void moe_unpermute_combine_backward(const Tensor& dy, const Tensor& rows, const Tensor& copy_row,
                                    const Tensor& weight, int64_t top_k, Tensor& drows,
                                    Tensor& dweight);

// The shared-expert gate: gate[t] = sigmoid(logit[t]); y[t] += gate[t] s[t]. logit [N, 1] (data
// dtype), s and y [N, D], gate [N].
void moe_gate_add(const Tensor& logit, const Tensor& s, Tensor& gate, Tensor& y);
// ds[t] = gate[t] dy[t]; dlogit[t] = <dy[t], s[t]> gate[t] (1 - gate[t]). dlogit [N, 1] (data
// dtype).
void moe_gate_backward(const Tensor& dy, const Tensor& s, const Tensor& gate, Tensor& ds,
                       Tensor& dlogit);

// Rows as bytes (any dtype, any trailing shape), index i64 on the data's device:
// gather: out[j] = in[index[j]]; scatter: out[index[j]] = in[j], other rows of out untouched
// (the indices of a scatter must be distinct).
void gather_rows(const Tensor& in, const Tensor& index, Tensor& out);
void scatter_rows(const Tensor& in, const Tensor& index, Tensor& out);

}  // namespace linea::kernels
