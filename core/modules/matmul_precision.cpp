#include "core/modules/matmul_precision.h"

namespace linea {
namespace {
thread_local MatmulPrecision current = MatmulPrecision::kStorage;
}  // namespace

MatmulPrecision matmul_precision() { return current; }

MatmulPrecisionScope::MatmulPrecisionScope(MatmulPrecision p) : previous_(current) { current = p; }

MatmulPrecisionScope::~MatmulPrecisionScope() { current = previous_; }

DType matmul_operand_dtype(const Tensor& t) {
  if (current == MatmulPrecision::kBF16 && t.defined() && !t.device().is_cpu() &&
      t.dtype() == DType::kF32)
    return DType::kBF16;
  return t.dtype();
}

Tensor matmul_operand(const Tensor& t) {
  const DType dt = matmul_operand_dtype(t);
  return dt == t.dtype() ? t : t.to(dt);
}

}  // namespace linea
