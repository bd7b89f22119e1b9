// Collectives along the time axis of [B, T, ...] tensors for sequence parallelism: the ranks of
// an SP group hold contiguous, rank-ordered shards of the same sequences.
//   all_gather_time:     local [B, T_l, ...] -> whole [B, W*T_l, ...] (rank r's rows at r*T_l)
//   reduce_scatter_time: whole [B, W*T_l, ...] on every rank -> local [B, T_l, ...], the sum over
//                        ranks of the rows of this rank's shard.
// They are each other's backward partners (STYLE.md 6). Bytes are counted by the communicator.
#pragma once

#include "parallel/communicator.h"

namespace linea::parallel {

Tensor all_gather_time(Communicator& comm, const Tensor& local);
Tensor reduce_scatter_time(Communicator& comm, const Tensor& whole);

}  // namespace linea::parallel
