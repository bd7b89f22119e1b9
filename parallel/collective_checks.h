// Argument checks shared by every Communicator backend, so that a call that is wrong on W ranks is
// already wrong on one (SelfCommunicator) and fails with the same message. All checks are local:
// every rank of a correct program passes the same shapes, so a failing check throws on every rank
// before any of them enters the collective, and nothing hangs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor/tensor.h"

namespace linea::parallel::detail {

// Defined, on the CPU, not bf16 when `reduces` (bf16 sums lose too much; reduce in f32).
void check_tensor(const char* op, const std::string& group, const Tensor& t, bool reduces);
void check_same_dtype(const char* op, const std::string& group, const Tensor& a, const Tensor& b);
// out.numel() == size * in.numel()
void check_gather_sizes(const char* op, const std::string& group, int size, const Tensor& in,
                        const Tensor& out);
// in.numel() == size * out.numel()
void check_scatter_sizes(const char* op, const std::string& group, int size, const Tensor& in,
                         const Tensor& out);
void check_peer(const char* op, const std::string& group, int size, int rank, int peer);

// in and out share no byte (reduce_scatter, all_to_all_v).
void check_no_overlap(const char* op, const std::string& group, const Tensor& in,
                      const Tensor& out);
// all_gather: true when in is this rank's block of out (the in-place form), false when they share
// no byte; any other overlap is an error.
bool gather_in_place(const std::string& group, int rank, const Tensor& in, const Tensor& out);

// Elements in one row of t (the product of the dims after the first); 1 for a 1-D tensor.
int64_t row_width(const Tensor& t);
// Validates all_to_all_v's shapes and counts (the device is each backend's check); returns the row
// width shared by in and out.
int64_t check_all_to_all(const std::string& group, int size, const Tensor& in,
                         const std::vector<int64_t>& send_counts, const Tensor& out,
                         const std::vector<int64_t>& recv_counts);

}  // namespace linea::parallel::detail
