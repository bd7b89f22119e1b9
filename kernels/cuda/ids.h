// Internal to kernels/cuda: the device-side range check of token ids and targets. One small
// kernel and one 8-byte read-back (a wait on the stream), so that a bad id is the same user
// error on the GPU as on the CPU, raised before anything is written.
#pragma once

#include <cstdint>

#include "core/tensor/tensor.h"

namespace linea::kernels::cuda {

// Every ids[i] lies in [0, vocab), or equals ignore_index when allow_ignore. Otherwise throws
// the user error `op`: "<what> id X at <where> i is outside [0, vocab)" with `hint`.
// Returns the number of ids that are not ignored.
int64_t check_ids_in_range(const Tensor& ids, int64_t vocab, bool allow_ignore,
                           int32_t ignore_index, const char* op, const char* what,
                           const char* where, const char* hint);

}  // namespace linea::kernels::cuda
