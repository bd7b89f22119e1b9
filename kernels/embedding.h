// Token embedding lookup.
//   forward:  y[n, :] = table[ids[n], :]          ids i32 of any shape, y [..., D]
//   backward: dtable[ids[n], :] += dy[n, :]        (accumulated, `+=`; f64 accumulation not needed)
// Ids outside [0, V) are a user error (names the id and V).
// CUDA: table/y f32 or bf16; dtable f32, each id's rows summed in position order after a stable
// sort of the ids (deterministic); the id check waits for one read-back.
#pragma once

#include "core/tensor/tensor.h"

namespace linea::kernels {

void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y);
void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable);

}  // namespace linea::kernels
