// Mixed precision of the modules' matrix products (train.precision). With kBF16, Linear and the LM
// head feed cuBLAS bf16 copies of their input and weight and accumulate in f32 into f32 outputs
// (activations, input gradients and weight gradients stay f32); the parameters, their gradients,
// the optimizer state, recurrent states and every reduction stay f32. Only CUDA tensors of f32
// storage are affected: the CPU path (the reference) always computes in its storage dtype.
// The model installs a scope for each forward and backward, like DefaultDeviceScope.
#pragma once

#include "core/tensor/tensor.h"

namespace linea {

enum class MatmulPrecision { kStorage, kBF16 };

MatmulPrecision matmul_precision();

class MatmulPrecisionScope {
 public:
  explicit MatmulPrecisionScope(MatmulPrecision p);
  ~MatmulPrecisionScope();
  MatmulPrecisionScope(const MatmulPrecisionScope&) = delete;
  MatmulPrecisionScope& operator=(const MatmulPrecisionScope&) = delete;

 private:
  MatmulPrecision previous_;
};

// The operand a product of `t` should use under the current precision: t itself, or its bf16 copy
// when t is an f32 CUDA tensor and the precision is kBF16.
Tensor matmul_operand(const Tensor& t);
// The dtype matmul_operand(t) has (bf16 or t's own), without making the copy.
DType matmul_operand_dtype(const Tensor& t);

}  // namespace linea
