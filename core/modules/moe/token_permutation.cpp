#include "core/modules/moe/token_permutation.h"

#include <cmath>

#include "core/util/check.h"
#include "kernels/moe_permute.h"

namespace linea {
namespace {

template <typename T>
void gather_rows(const T* x, const DispatchPlan& plan, int64_t D, T* rows) {
  for (int64_t r = 0; r < plan.rows(); ++r) {
    const T* src = x + (plan.row_copy[r] / plan.top_k) * D;
    std::copy(src, src + D, rows + r * D);
  }
}

template <typename T>
void scatter_add_rows(const T* drows, const DispatchPlan& plan, int64_t D, T* dx) {
  for (int64_t r = 0; r < plan.rows(); ++r) {
    T* dst = dx + (plan.row_copy[r] / plan.top_k) * D;
    for (int64_t d = 0; d < D; ++d) dst[d] += drows[r * D + d];
  }
}

template <typename T>
void combine(const T* rows, const DispatchPlan& plan, const std::vector<double>& w, int64_t D,
             T* out) {
  for (int64_t c = 0; c < plan.tokens * plan.top_k; ++c) {
    const int64_t r = plan.copy_row[c];
    if (r < 0) continue;
    T* o = out + (c / plan.top_k) * D;
    const T wc = static_cast<T>(w[c]);
    for (int64_t d = 0; d < D; ++d) o[d] += wc * rows[r * D + d];
  }
}

template <typename T>
void combine_backward(const T* dy, const T* rows, const DispatchPlan& plan,
                      const std::vector<double>& w, int64_t D, T* drows, std::vector<double>& dw) {
  for (int64_t c = 0; c < plan.tokens * plan.top_k; ++c) {
    const int64_t r = plan.copy_row[c];
    dw[c] = 0;
    if (r < 0) continue;
    const T* g = dy + (c / plan.top_k) * D;
    double acc = 0;
    for (int64_t d = 0; d < D; ++d) {
      acc += static_cast<double>(g[d]) * static_cast<double>(rows[r * D + d]);
      drows[r * D + d] = static_cast<T>(w[c]) * g[d];
    }
    dw[c] = acc;
  }
}

void check_cpu_float(const Tensor& t, const char* what) {
  LINEA_CHECK(t.device().is_cpu() && (t.dtype() == DType::kF32 || t.dtype() == DType::kF64))
      << what << ": needs a CPU f32/f64 tensor, got " << dtype_name(t.dtype());
}

}  // namespace

int64_t expert_capacity(double capacity_factor, int64_t tokens, int64_t top_k, int64_t experts) {
  if (capacity_factor <= 0) return -1;
  return static_cast<int64_t>(
      std::ceil(capacity_factor * static_cast<double>(tokens * top_k) / experts));
}

DispatchPlan plan_dispatch(const std::vector<int32_t>& expert, int64_t tokens, int64_t top_k,
                           int64_t experts, int64_t capacity) {
  DispatchPlan p;
  p.tokens = tokens;
  p.top_k = top_k;
  p.experts = experts;
  const int64_t copies = tokens * top_k;
  LINEA_CHECK(static_cast<int64_t>(expert.size()) == copies)
      << "plan_dispatch: " << expert.size() << " choices for " << copies << " copies";
  // Counting sort by expert; walking copies in token order keeps it stable, and the first
  // `capacity` copies of an expert are its earliest tokens.
  std::vector<int64_t> kept(experts, 0);
  p.copy_row.assign(copies, -1);
  for (int64_t c = 0; c < copies; ++c) {
    const int32_t e = expert[c];
    LINEA_CHECK(e >= 0 && e < experts) << "plan_dispatch: expert " << e << " out of range";
    if (capacity >= 0 && kept[e] >= capacity) {
      ++p.dropped;
      continue;
    }
    p.copy_row[c] = kept[e]++;  // position inside its expert for now
  }
  p.offsets.assign(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e) p.offsets[e + 1] = p.offsets[e] + kept[e];
  p.row_copy.assign(p.offsets.back(), -1);
  for (int64_t c = 0; c < copies; ++c) {
    if (p.copy_row[c] < 0) continue;
    p.copy_row[c] += p.offsets[expert[c]];
    p.row_copy[p.copy_row[c]] = c;
  }
  return p;
}

void upload_plan(DispatchPlan& plan, Device device) {
  const int64_t rows = plan.rows(), copies = plan.tokens * plan.top_k;
  LINEA_CHECK(static_cast<int64_t>(plan.row_copy.size()) == rows &&
              static_cast<int64_t>(plan.copy_row.size()) == copies)
      << "upload_plan: a plan of " << rows << " rows and " << copies << " copies holds "
      << plan.row_copy.size() << " and " << plan.copy_row.size();
  Tensor host = Tensor::empty({rows + copies}, DType::kI32, Device::cpu());
  int32_t* h = host.data<int32_t>();
  for (int64_t r = 0; r < rows; ++r) h[r] = static_cast<int32_t>(plan.row_copy[r]);
  for (int64_t c = 0; c < copies; ++c) h[rows + c] = static_cast<int32_t>(plan.copy_row[c]);
  const Tensor on = host.to(device);
  plan.row_copy_index = on.slice(0, rows);
  plan.copy_row_index = on.slice(rows, rows + copies);
}

namespace {

void check_uploaded(const DispatchPlan& plan, const Tensor& t, const char* op) {
  LINEA_CHECK(plan.copy_row_index.defined() && plan.copy_row_index.device() == t.device())
      << op << ": the plan's indices are not on " << t.device().str() << " (upload_plan first)";
}

}  // namespace

Tensor permute_tokens(const Tensor& x, const DispatchPlan& plan) {
  return permute_tokens(x, plan, x.dtype());
}

Tensor permute_tokens(const Tensor& x, const DispatchPlan& plan, DType rows_dtype) {
  if (!x.device().is_cpu()) {
    check_uploaded(plan, x, "permute_tokens");
    Tensor rows = Tensor::empty({plan.rows(), x.dim(-1)}, rows_dtype, x.device());
    kernels::moe_permute(x, plan.row_copy_index, plan.top_k, rows);
    return rows;
  }
  check_cpu_float(x, "permute_tokens");
  LINEA_CHECK(rows_dtype == x.dtype())
      << "permute_tokens: CPU rows keep x's dtype " << dtype_name(x.dtype()) << ", asked for "
      << dtype_name(rows_dtype);
  const int64_t D = x.dim(-1);
  Tensor rows = Tensor::empty({plan.rows(), D}, x.dtype());
  if (x.dtype() == DType::kF32)
    gather_rows(x.data<float>(), plan, D, rows.data<float>());
  else
    gather_rows(x.data<double>(), plan, D, rows.data<double>());
  return rows;
}

void permute_tokens_backward(const Tensor& drows, const DispatchPlan& plan, Tensor& dx) {
  if (!dx.device().is_cpu()) {
    check_uploaded(plan, dx, "permute_tokens_backward");
    kernels::moe_permute_backward(drows, plan.copy_row_index, plan.top_k, dx);
    return;
  }
  check_cpu_float(dx, "permute_tokens_backward");
  const int64_t D = dx.dim(-1);
  if (dx.dtype() == DType::kF32)
    scatter_add_rows(drows.data<float>(), plan, D, dx.data<float>());
  else
    scatter_add_rows(drows.data<double>(), plan, D, dx.data<double>());
}

Tensor unpermute_combine(const Tensor& rows, const DispatchPlan& plan,
                         const std::vector<double>& weight) {
  check_cpu_float(rows, "unpermute_combine");
  const int64_t D = rows.dim(-1);
  Tensor out = Tensor::zeros({plan.tokens, D}, rows.dtype());
  if (rows.dtype() == DType::kF32)
    combine(rows.data<float>(), plan, weight, D, out.data<float>());
  else
    combine(rows.data<double>(), plan, weight, D, out.data<double>());
  return out;
}

void unpermute_combine_backward(const Tensor& dy, const Tensor& rows, const DispatchPlan& plan,
                                const std::vector<double>& weight, Tensor& drows,
                                std::vector<double>& dweight) {
  check_cpu_float(rows, "unpermute_combine_backward");
  const int64_t D = rows.dim(-1);
  drows = Tensor::empty(rows.shape(), rows.dtype());
  dweight.assign(plan.tokens * plan.top_k, 0.0);
  if (rows.dtype() == DType::kF32)
    combine_backward(dy.data<float>(), rows.data<float>(), plan, weight, D, drows.data<float>(),
                     dweight);
  else
    combine_backward(dy.data<double>(), rows.data<double>(), plan, weight, D, drows.data<double>(),
                     dweight);
}

Tensor unpermute_combine(const Tensor& rows, const DispatchPlan& plan, const Tensor& weight) {
  return unpermute_combine(rows, plan, weight, rows.dtype());
}

Tensor unpermute_combine(const Tensor& rows, const DispatchPlan& plan, const Tensor& weight,
                         DType out_dtype) {
  if (!rows.device().is_cpu()) check_uploaded(plan, rows, "unpermute_combine");
  Tensor out = Tensor::empty({plan.tokens, rows.dim(-1)}, out_dtype, rows.device());
  kernels::moe_unpermute_combine(rows, plan.copy_row_index, weight, plan.top_k, out);
  return out;
}

void unpermute_combine_backward(const Tensor& dy, const Tensor& rows, const DispatchPlan& plan,
                                const Tensor& weight, Tensor& drows, Tensor& dweight) {
  if (!dy.device().is_cpu()) check_uploaded(plan, dy, "unpermute_combine_backward");
  drows = Tensor::empty(rows.shape(), rows.dtype(), rows.device());
  dweight = Tensor::empty({plan.tokens * plan.top_k}, weight.dtype(), dy.device());
  kernels::moe_unpermute_combine_backward(dy, rows, plan.copy_row_index, weight, plan.top_k, drows,
                                          dweight);
}

}  // namespace linea
