// The module-side pieces of the decay mixers (decay_mixers.h): activations into new tensors (the
// element-wise math is kernels/gates.h), biases, column blocks of fused projections, and the short
// causal convolution with its halo. CPU loops on f32/f64 tensors (one dtype per call); backward
// functions accumulate (`+=`) into parameter gradients (bias, convolution weight). Reductions over
// rows in f64.
#pragma once

#include <string>

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

// [B, T, ..] with `rows` zero rows put in front: the gradient of dropped leading outputs, and the
// halo of a segment that starts the sequence.
Tensor zero_rows_in_front(const Tensor& t, int64_t rows);

// Short causal depthwise convolution of a segment (kernels/short_conv.h), weight "<name>.weight"
// [C, K]. The input carries the halo: x [B, K - 1 + T, C], whose first K - 1 rows are the end of
// the previous segment (zeros at the sequence start); the output is [B, T, C], so the first
// output sees exactly the rows the whole sequence would give it. Backward returns dx [B, K-1+T, C]
// whose first K - 1 rows are the halo's gradient.
class ShortConv {
 public:
  ShortConv(const std::string& name, int64_t channels, int64_t kernel, bool silu, DType dtype);
  // PyTorch's default Conv1d initialisation has variance 1 / (3 fan_in), fan_in = K for a
  // depthwise convolution (mamba_ssm keeps it); we draw a normal of that variance.
  void init(uint64_t seed);
  Tensor forward(const Tensor& x);
  Tensor backward(const Tensor& dy);
  void collect(ParameterList& out) { out.push_back(&weight_); }
  int64_t kernel() const { return weight_.value.dim(1); }

 private:
  Parameter weight_;
  bool silu_;
  Tensor x_;
};

}  // namespace linea::decay_ops
