// Rotary position embedding (RoPE) on [B, T, H, D], D even, rotate-half convention (Llama / HF):
// channel i < D/2 pairs with i + D/2 and the pair turns by angle a = pos * theta^(-2i / D):
//   y_i       = x_i cos a - x_{i+D/2} sin a
//   y_{i+D/2} = x_{i+D/2} cos a + x_i sin a
// pos = pos_offset + t: the global position, so a sequence-parallel rank passes
// pos_offset = rank * local_length and its rotations match the unsplit sequence.
// forward:  y = R x; y may be x itself (in place).
// backward: dx = R^T dy (the inverse rotation), written (`=`); dx may be dy itself.
// Angles, cos and sin in f64, rounded to the data dtype only when applied. f32 or f64 on CPU;
// f32 or bf16 on CUDA (cos/sin rounded to f32, rotation in f32, current stream).
#pragma once

#include <cstdint>

#include "core/tensor/tensor.h"

namespace linea::kernels {

struct RopeParams {
  double theta = 10000.0;  // frequency base
  int64_t pos_offset = 0;  // global position of token 0
};

void rope_forward(const Tensor& x, const RopeParams& p, Tensor& y);
void rope_backward(const Tensor& dy, const RopeParams& p, Tensor& dx);

}  // namespace linea::kernels
