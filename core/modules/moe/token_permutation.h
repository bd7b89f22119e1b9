// Token permutation by expert, the "prepare" and "finish" halves of MoE dispatch. The layer runs
//   route -> plan_dispatch + permute_tokens (prepare) -> [communicate; identity at EP = 1] ->
//   grouped expert compute -> [inverse communicate] -> unpermute_combine (finish).
// Permuted rows are grouped by expert (expert 0 first); inside an expert, copies keep token order
// (stable). With a capacity, each expert keeps its first `capacity` copies in token order; later
// copies are dropped: they get no row and contribute 0 to the output.
//
// Gradient partners: permute_tokens_backward is the scatter-add dual of permute_tokens;
// unpermute_combine_backward gives d(permuted rows) (`=`) and d(combine weights) (`=`).
//
// On a GPU the plan is still built on the host (from the [N k] experts the router read back);
// upload_plan copies row_copy and copy_row to the device once, and the row movement runs the
// kernels of kernels/moe_permute.h, with the combine weights as an f32 device tensor.
#pragma once

#include <vector>

#include "core/tensor/tensor.h"

namespace linea {

struct DispatchPlan {
  int64_t tokens = 0, top_k = 0, experts = 0;
  std::vector<int64_t> offsets;   // [E + 1]: rows of expert e are [offsets[e], offsets[e+1])
  std::vector<int64_t> row_copy;  // [rows]: copy index c = t * k + j of each permuted row
  std::vector<int64_t> copy_row;  // [N * k]: row of each copy, -1 when dropped
  int64_t dropped = 0;
  // i32 copies of row_copy and copy_row on the data's device (upload_plan; GPU only).
  Tensor row_copy_index, copy_row_index;
  int64_t rows() const { return offsets.empty() ? 0 : offsets.back(); }
};

// expert: [N * k] chosen experts. capacity < 0: dropless.
DispatchPlan plan_dispatch(const std::vector<int32_t>& expert, int64_t tokens, int64_t top_k,
                           int64_t experts, int64_t capacity);
// capacity = ceil(capacity_factor * tokens * top_k / experts), or -1 when capacity_factor is 0.
int64_t expert_capacity(double capacity_factor, int64_t tokens, int64_t top_k, int64_t experts);

// Uploads row_copy and copy_row to `device` (one host-to-device copy) for the tensor overloads.
void upload_plan(DispatchPlan& plan, Device device);

// x [N, D] -> rows [plan.rows(), D], in x's dtype or (GPU) in rows_dtype (f32 <-> bf16).
Tensor permute_tokens(const Tensor& x, const DispatchPlan& plan);
Tensor permute_tokens(const Tensor& x, const DispatchPlan& plan, DType rows_dtype);
// d(rows) [rows, D] -> adds into dx [N, D].
void permute_tokens_backward(const Tensor& drows, const DispatchPlan& plan, Tensor& dx);

// out[t] = sum_j weight[t k + j] * rows[row of (t, j)] (dropped copies add nothing).
Tensor unpermute_combine(const Tensor& rows, const DispatchPlan& plan,
                         const std::vector<double>& weight);
// drows[r] = weight[c] * dy[t]; dweight[c] = <dy[t], rows[r]> (0 for dropped copies).
void unpermute_combine_backward(const Tensor& dy, const Tensor& rows, const DispatchPlan& plan,
                                const std::vector<double>& weight, Tensor& drows,
                                std::vector<double>& dweight);
// The same with device weights [N k] f32 (any device; GPU tensors need upload_plan): dweight
// is written as [N k] f32 next to dy; drows has rows' dtype (on a GPU dy's may differ).
Tensor unpermute_combine(const Tensor& rows, const DispatchPlan& plan, const Tensor& weight);
// The same with the output in out_dtype (GPU: bf16 rows to f32 tokens or back).
Tensor unpermute_combine(const Tensor& rows, const DispatchPlan& plan, const Tensor& weight,
                         DType out_dtype);
void unpermute_combine_backward(const Tensor& dy, const Tensor& rows, const DispatchPlan& plan,
                                const Tensor& weight, Tensor& drows, Tensor& dweight);

}  // namespace linea
