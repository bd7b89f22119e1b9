// One AdamW update of one parameter tensor (decoupled weight decay, bias-corrected moments):
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + wd * p),   bc_i = 1 - b_i^t
// p, m, v are updated in place (`=`); g is read. No gradient rule: this is the optimizer.
// CPU: p, g, m, v one dtype, f32 or f64, arithmetic in f64. CUDA: p, m, v f32 (the master
// weights and moments), g f32 or bf16, arithmetic in f32, one fused pass on the current stream.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

struct AdamWStep {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  double bias_correction1 = 1, bias_correction2 = 1;  // 1 - beta^t at this step
};

void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& s);

}  // namespace linea::kernels
