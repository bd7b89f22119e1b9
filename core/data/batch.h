// A micro-batch of training samples: inputs and next-token targets, [B, T] i32 each.
// Targets equal to kernels::kIgnoreIndex (-1) carry no loss.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::data {

struct Batch {
  Tensor inputs;   // [B, T] i32
  Tensor targets;  // [B, T] i32
};

}  // namespace linea::data
