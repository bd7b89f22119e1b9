// The short causal convolution of a segment, and the halo that feeds it. A mixer whose input side
// convolves over the K - 1 tokens before each one receives those rows of the previous segment's
// input (SegmentIn::halo; zeros at the start of a sequence), runs its projections and
// convolutions over [halo; x], drops the halo rows' outputs, and returns the halo rows' gradient
// (SegmentGradOut::d_halo), which the previous segment adds to its input gradient.
// The convolution is kernels/short_conv.h; its weight gradient is accumulated (`+=`).
#pragma once

#include <string>

#include "core/modules/module.h"

namespace linea {

// [halo; x] [B, rows + T, D] for x [B, T, D]: `halo` [B, rows, D], or zeros where it is undefined
// (the segment starts the sequence). rows == 0 gives x itself.
Tensor prepend_halo(const Tensor& x, const Tensor& halo, int64_t rows);
// The gradient partner: the last T rows of d [B, rows + T, D] (d itself for rows == 0); the first
// `rows` rows go to *d_halo when it is non-null.
Tensor split_halo(const Tensor& d, int64_t rows, Tensor* d_halo);

// Depthwise causal convolution of [halo; x] with w [C, K]: x_ext [B, K - 1 + T, C] -> [B, T, C],
// the K - 1 halo rows' outputs dropped, so that the first output sees exactly the rows the whole
// sequence would give it.
Tensor short_conv_segment_forward(const Tensor& x_ext, const Tensor& w, bool silu);
// dy [B, T, C] -> dx_ext [B, K - 1 + T, C] (the halo rows' gradient first); dw `+=`.
Tensor short_conv_segment_backward(const Tensor& x_ext, const Tensor& w, bool silu,
                                   const Tensor& dy, Tensor& dw);

// The convolution with a learned weight "<name>.weight" [C, K], K >= 2.
class ShortConv {
 public:
  ShortConv(const std::string& name, int64_t channels, int64_t kernel, bool silu, DType dtype);
  // PyTorch's default Conv1d initialisation has variance 1 / (3 fan_in), fan_in = K for a
  // depthwise convolution (mamba_ssm keeps it); we draw a normal of that variance.
  void init(uint64_t seed);
  // N(0, std) instead: fla's DeltaNet initialises its Conv1d like the projections.
  void init(uint64_t seed, double std);
  void collect(ParameterList& out) { out.push_back(&weight_); }
  int64_t kernel() const { return weight_.value.dim(1); }
  void release_saved() { x_ = Tensor(); }

  // x_ext [B, K - 1 + T, C] -> [B, T, C], saving x_ext for the backward.
  Tensor forward(const Tensor& x_ext);
  // dy [B, T, C] -> dx_ext [B, K - 1 + T, C]; releases what the forward saved.
  Tensor backward(const Tensor& dy);
  // The same pair without saving anything, for one convolution applied to several inputs (MoM's
  // memories share theirs): the caller keeps x_ext until the backward.
  Tensor apply(const Tensor& x_ext) const;
  Tensor apply_backward(const Tensor& x_ext, const Tensor& dy);

 private:
  Parameter weight_;
  bool silu_;
  Tensor x_;
};

}  // namespace linea
