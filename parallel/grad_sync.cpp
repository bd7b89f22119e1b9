#include "parallel/grad_sync.h"

#include <cstring>

#include "core/util/check.h"

namespace linea::parallel {

namespace {

// bf16 gradients are summed in f32: bf16 sums of W terms lose most of their bits.
DType reduce_dtype(DType t) { return t == DType::kBF16 ? DType::kF32 : t; }

void average_group(const std::vector<Parameter*>& group, DType buffer_dtype, Communicator& comm) {
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
  const int w = comm.size();
  if (buffer_dtype == DType::kF32) {
    float* v = flat.data<float>();
    for (int64_t i = 0; i < total; ++i) v[i] /= static_cast<float>(w);
  } else {
    double* v = flat.data<double>();
    for (int64_t i = 0; i < total; ++i) v[i] /= static_cast<double>(w);
  }
  off = 0;
  for (Parameter* p : group) {
    const int64_t n = p->grad.numel();
    p->grad.copy_from(flat.slice(off, off + n));
    off += n;
  }
}

}  // namespace

namespace {
// Every rank must pack the same buffers in the same order, or the all-reduces mismatch (and
// hang); hence a fixed dtype order and the list order inside it.
void average_sharding(const ParameterList& params, ParamSharding sharding, Communicator& comm) {
  if (comm.size() == 1) return;
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    std::vector<Parameter*> group;
    for (Parameter* p : params) {
      if (p->sharding != sharding) continue;
      LINEA_CHECK(p->grad.defined())
          << "parameter '" << p->name << "' has no gradient to average; every rank must "
          << "hold a gradient for every parameter of its group";
      LINEA_CHECK(p->grad.dtype() != DType::kI32 && p->grad.dtype() != DType::kI64)
          << "parameter '" << p->name << "' has an integer gradient ("
          << dtype_name(p->grad.dtype()) << ")";
      if (p->grad.dtype() == dtype) group.push_back(p);
    }
    average_group(group, reduce_dtype(dtype), comm);
  }
}
}  // namespace

void average_replicated_gradients(const ParameterList& params, const ProcessGrid& grid) {
  average_sharding(params, ParamSharding::kReplicated, grid.dp_sp());
}

void average_expert_gradients(const ParameterList& params, Communicator& expert_dp) {
  average_sharding(params, ParamSharding::kExpert, expert_dp);
}

}  // namespace linea::parallel
