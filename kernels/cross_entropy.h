// Softmax cross-entropy over the vocabulary, mean over the targets that are not ignored.
//   forward:  loss = (1/n_valid) * sum_{n: t_n != ignore} (logsumexp(z_n) - z_n[t_n])
//             lse [N] (f64 accumulation, stored in logits' dtype) is saved for the backward;
//             returns the loss and writes n_valid.
//   backward: dz_n = dloss * (softmax(z_n) - onehot(t_n)) / n_valid for valid rows, 0 otherwise
//             (`=`). `dz` may alias `logits` (written in place, to save the [N, V] buffer).
// logits [N, V] f32/f64, targets i32 [N]; targets outside [0, V) other than ignore are an error.
// CUDA: logits/dlogits f32 or bf16, read in place (no f32 copy), lse f32; the forward waits for
// its one read-back (loss, count, target check); the backward trusts the checked targets.
#pragma once

#include <cstdint>

#include "core/tensor/tensor.h"

namespace linea::kernels {

constexpr int32_t kIgnoreIndex = -1;

double cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& lse,
                             int64_t* n_valid);
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            double dloss, int64_t n_valid, Tensor& dlogits);

}  // namespace linea::kernels
