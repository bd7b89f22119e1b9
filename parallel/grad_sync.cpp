#include "parallel/grad_sync.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "core/util/check.h"
#include "kernels/elementwise.h"

namespace linea::parallel {

namespace {

// bf16 gradients are summed in f32: bf16 sums of W terms lose most of their bits.
DType reduce_dtype(DType t) { return t == DType::kBF16 ? DType::kF32 : t; }

// Sums the group's gradients over comm and divides them by `divisor`.
void reduce_group(const std::vector<Parameter*>& group, DType buffer_dtype, Communicator& comm,
                  int divisor) {
  int64_t total = 0;
  for (const Parameter* p : group) total += p->grad.numel();
  if (total == 0) return;
  Tensor flat = Tensor::empty({total}, buffer_dtype);
  int64_t off = 0;
  for (const Parameter* p : group) {
    const int64_t n = p->grad.numel();
    Tensor dst = flat.slice(off, off + n);
    dst.copy_from(p->grad);
    off += n;
  }
  comm.all_reduce(flat, ReduceOp::kSum);
  if (buffer_dtype == DType::kF32) {
    float* v = flat.data<float>();
    for (int64_t i = 0; i < total; ++i) v[i] /= static_cast<float>(divisor);
  } else {
    double* v = flat.data<double>();
    for (int64_t i = 0; i < total; ++i) v[i] /= static_cast<double>(divisor);
  }
  off = 0;
  for (Parameter* p : group) {
    const int64_t n = p->grad.numel();
    p->grad.copy_from(flat.slice(off, off + n));
    off += n;
  }
}

void check_gradient(const Parameter& p) {
  LINEA_CHECK(p.grad.defined()) << "parameter '" << p.name << "' has no gradient to reduce; every "
                                << "rank must hold a gradient for every parameter it holds";
  LINEA_CHECK(p.grad.dtype() != DType::kI32 && p.grad.dtype() != DType::kI64)
      << "parameter '" << p.name << "' has an integer gradient (" << dtype_name(p.grad.dtype())
      << ")";
}

// Every rank of comm must pack the same buffers in the same order, or the all-reduces mismatch
// (and hang); hence a fixed dtype order and the list order inside it.
void reduce_sharding(const ParameterList& params, ParamSharding sharding, Communicator& comm,
                     int divisor) {
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    std::vector<Parameter*> group;
    for (Parameter* p : params) {
      if (p->sharding != sharding) continue;
      check_gradient(*p);
      if (p->grad.dtype() == dtype) group.push_back(p);
    }
    reduce_group(group, reduce_dtype(dtype), comm, divisor);
  }
}

// The sum over the whole model of f(parameter), each parameter once: replicated parameters (the
// same on every rank) locally, expert ones (different across the EP group, the same across
// expert-DP) summed over grid.ep(). Every rank joins, holding experts or not, so the collective
// matches.
template <typename F>
double sum_once_over_model(const ParameterList& params, const ProcessGrid& grid, F f) {
  double replicated = 0, expert = 0;
  for (const Parameter* p : params)
    (p->sharding == ParamSharding::kExpert ? expert : replicated) += f(*p);
  if (grid.ep().size() > 1) expert = grid.ep().all_reduce_scalar(expert, ReduceOp::kSum);
  return replicated + expert;
}

}  // namespace

void average_replicated_gradients(const ParameterList& params, const ProcessGrid& grid) {
  Communicator& comm = grid.dp_sp();
  if (comm.size() == 1) return;
  reduce_sharding(params, ParamSharding::kReplicated, comm, comm.size());
}

void reduce_expert_gradients(const ParameterList& params, const ProcessGrid& grid) {
  const int divisor = grid.dp_sp().size();
  if (divisor == 1) return;  // one rank: nothing to sum, nothing to divide
  reduce_sharding(params, ParamSharding::kExpert, grid.expert_dp(), divisor);
}

void sync_gradients(const ParameterList& params, const ProcessGrid& grid) {
  average_replicated_gradients(params, grid);
  reduce_expert_gradients(params, grid);
}

double global_grad_norm(const ParameterList& params, const ProcessGrid& grid) {
  // Every parameter's sum of squares into one f64 buffer on the gradients' device, then one
  // read-back (not one wait per parameter); then the same sums in the same order as before.
  Device dev = Device::cpu();
  for (const Parameter* p : params)
    if (p->grad.defined()) dev = p->grad.device();
  Tensor sums = Tensor::zeros({static_cast<int64_t>(params.size())}, DType::kF64, dev);
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i]->grad.defined()) kernels::sum_squares_into(params[i]->grad, sums, int64_t(i));
  const std::vector<double> host = sums.to_vector();
  std::unordered_map<const Parameter*, double> of;
  for (size_t i = 0; i < params.size(); ++i) of[params[i]] = host[i];
  return std::sqrt(
      sum_once_over_model(params, grid, [&](const Parameter& p) { return of.at(&p); }));
}

int64_t count_parameters(const ParameterList& params, const ProcessGrid& grid) {
  return static_cast<int64_t>(sum_once_over_model(
      params, grid, [](const Parameter& p) { return static_cast<double>(p.value.numel()); }));
}

double clip_gradients(const ParameterList& params, const ProcessGrid& grid, double max_norm) {
  const double norm = global_grad_norm(params, grid);
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const double s = max_norm / (norm + 1e-6);
    for (Parameter* p : params) {
      if (p->grad.defined()) kernels::scale(p->grad, s);
    }
  }
  return norm;
}

}  // namespace linea::parallel
