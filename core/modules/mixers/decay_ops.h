// The module-side pieces of the decay mixers (decay_mixers.h): activations into new tensors (the
// element-wise math is kernels/gates.h), biases, and column blocks of fused projections (the short
// convolution with its halo is short_conv.h). Device-agnostic: the kernels (kernels/gates.h,
// kernels/columns.h) run where the tensors live, and new tensors are made there; one dtype a call
// (CUDA: bias_backward's gradient is f32). bias_backward accumulates (`+=`) into the bias
// gradient, its reductions over rows in f64.
#pragma once

#include <vector>

#include "core/modules/module.h"
#include "kernels/gates.h"

namespace linea::decay_ops {

// act(x) and dy act'(x) (kernels/gates.h) into new tensors; the identity hands back its input
// itself, no copy.
Tensor act_forward(kernels::Activation a, const Tensor& x);
Tensor act_backward(kernels::Activation a, const Tensor& x, const Tensor& dy);

// y[..., c] += b[c];  bias_backward: db[c] += sum over rows of dy[..., c].
void add_bias(Tensor& y, const Tensor& b);
void bias_backward(const Tensor& dy, Tensor& db);

// Column block [c0, c1) of the rows [row0, T) of t [B, T, W] -> [B, T - row0, c1 - c0] (a copy).
Tensor columns(const Tensor& t, int64_t row0, int64_t c0, int64_t c1);
// The gradient partner: dst[:, row0:, c0:c0+W'] += src [B, T - row0, W'].
void add_columns(Tensor& dst, int64_t row0, int64_t c0, const Tensor& src);
// The last dimension of each tensor side by side: [B, T, W_i] -> [B, T, sum W_i].
Tensor concat_columns(const std::vector<Tensor>& parts);

}  // namespace linea::decay_ops
