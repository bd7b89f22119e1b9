// Biases and column blocks of activations laid out [.., W] (the fused projections and gate biases
// of the decay mixers, core/modules/mixers/decay_ops.h):
//   add_bias:            y[..., c] += b[c]                               (in place)
//   bias_backward:       db[c] += sum over the rows of dy[..., c]        (`+=`, a parameter grad)
//   gather_columns:      out = t[:, row0:, c0:c0 + w]   t [B, T, W] -> out [B, T - row0, w] (`=`)
//   scatter_add_columns: dst[:, row0:, c0:c0 + w] += src [B, T - row0, w]
// gather_columns and scatter_add_columns are each other's gradient partners.
// CPU: f32 or f64, one dtype a call, bias sums in f64. CUDA: f32 or bf16; add_bias takes b in y's
// dtype or f32; bias_backward writes an f32 db, its row sums in f64 in a fixed order
// (deterministic); the current stream of the tensors' device.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void add_bias(Tensor& y, const Tensor& b);
void bias_backward(const Tensor& dy, Tensor& db);

void gather_columns(const Tensor& t, int64_t row0, int64_t c0, Tensor& out);
void scatter_add_columns(Tensor& dst, int64_t row0, int64_t c0, const Tensor& src);

}  // namespace linea::kernels
