// SwiGLU activation: h = silu(g) * u, silu(g) = g * sigmoid(g). All tensors one shape.
//   backward: dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g)));  du = dh * silu(g)  (`=`)
// Packed: gate and up side by side in one row, gu [..., 2F] = [g | u] (the output of one product
// with the stacked [2F, D] gate/up weight), h and dh [..., F], dgu [..., 2F] = [dg | du] (`=`;
// dgu may be gu itself).
// CPU f32/f64; CUDA f32/bf16 storage with f32 arithmetic on the current stream.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void swiglu_forward(const Tensor& g, const Tensor& u, Tensor& h);
void swiglu_backward(const Tensor& g, const Tensor& u, const Tensor& dh, Tensor& dg, Tensor& du);

void swiglu_packed_forward(const Tensor& gu, Tensor& h);
void swiglu_packed_backward(const Tensor& gu, const Tensor& dh, Tensor& dgu);

}  // namespace linea::kernels
