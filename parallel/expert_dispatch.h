// Token dispatch to experts across an EP group, and its inverse (combine). The MoE layer routes
// each token to top_k experts; each (token, expert) pair is a "copy" with one row of activations.
// The E experts are divided among the P ranks of the EP group in contiguous blocks: rank r holds
// the L = E / P local experts [r L, (r + 1) L).
//
//   prepare(expert_of_copy)     routing metadata + the counts exchange (all_to_all_v of counts)
//   dispatch(copies [N, ...])   -> rows for this rank's experts [M, ...], grouped by local expert
//                                  (one contiguous block per local expert, local_expert_counts()
//                                  rows each), inside a block in (source rank, copy order) order
//   combine(expert_rows [M, ...]) -> [N, ...] in the original copy order; dropped copies are zero
//
// Backward partners (STYLE.md 6): dispatch and combine are the transpose of each other (a partial
// permutation across the group), so dispatch_backward is combine's mapping and combine_backward is
// dispatch's. Each direction is split into pack / exchange / unpack, public so the MoE layer can
// overlap the exchange with compute (e.g. the shared experts while tokens are in flight):
//   dispatch = unpack_dispatched(exchange_dispatch(pack_dispatch(x)))
//   combine  = unpack_combined(exchange_combine(pack_combine(y)))
//
// What is sent (row bytes = product of the dims after the first * dtype size): prepare sends one
// row of L int64 counts to every rank; dispatch sends each kept copy routed to another rank's
// expert once; combine sends the same rows back. Counted by the communicator's byte rule
// (kAllToAll: rows to other ranks only). With P = 1 everything is a local permutation.
//
// Every call is collective over the EP group (all ranks call prepare, then the same sequence of
// exchanges). Rows may be any dtype on the CPU or a GPU (the permutations are byte copies,
// kernels/moe_permute.h gather_rows/scatter_rows); the bookkeeping (counts, orders) lives on the
// host, and prepare uploads the row orders once to the device the rows will be on. On a GPU the
// counts exchange moves a device tensor (the NCCL communicator takes only those; the MPI one
// stages it through the host) and reads it back: one small wait per prepare.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "parallel/communicator.h"

namespace linea::parallel {

class ExpertDispatcher {
 public:
  // ep is borrowed and must outlive the dispatcher. num_experts must be divisible by ep.size().
  ExpertDispatcher(Communicator& ep, int num_experts);

  // expert_of_copy[i] is the global expert of copy i, or -1 when the copy is dropped (capacity).
  // Collective: exchanges the per-expert counts with every rank of the group. device: where the
  // rows of the following dispatch/combine calls live.
  void prepare(std::span<const int32_t> expert_of_copy, Device device = Device::cpu());

  // ---- forward and backward, side by side ------------------------------------------------
  Tensor dispatch(const Tensor& copies);
  Tensor dispatch_backward(const Tensor& d_received) { return combine(d_received); }
  Tensor combine(const Tensor& expert_rows);
  Tensor combine_backward(const Tensor& d_copies) { return dispatch(d_copies); }

  // ---- the steps of each direction -------------------------------------------------------
  // Kept copies in send order (by destination rank, then expert, then copy order).
  Tensor pack_dispatch(const Tensor& copies) const;
  // all_to_all_v with the send counts out and the receive counts in.
  Tensor exchange_dispatch(const Tensor& packed);
  // Received rows (by source rank, then expert) regrouped by local expert, then source rank.
  Tensor unpack_dispatched(const Tensor& received) const;
  // Inverse of unpack_dispatched: expert-grouped rows back to (source rank, expert) order.
  Tensor pack_combine(const Tensor& expert_rows) const;
  // all_to_all_v with the receive counts out and the send counts in.
  Tensor exchange_combine(const Tensor& packed);
  // Rows in send order scattered back to copy order; dropped copies get zero rows.
  Tensor unpack_combined(const Tensor& returned) const;

  // ---- what prepare found ------------------------------------------------------------------
  int num_experts() const { return num_experts_; }
  int num_local_experts() const { return local_experts_; }
  // The first global expert this rank holds.
  int first_local_expert() const { return ep_.rank() * local_experts_; }
  int64_t num_copies() const { return num_copies_; }
  int64_t num_received() const { return num_received_; }
  // Rows per local expert in dispatch's output (sum = num_received()).
  const std::vector<int64_t>& local_expert_counts() const { return local_expert_counts_; }
  // Rows sent to / received from each rank of the group.
  const std::vector<int64_t>& send_counts() const { return send_counts_; }
  const std::vector<int64_t>& recv_counts() const { return recv_counts_; }

 private:
  void check_prepared(const char* op) const;
  void check_rows(const char* op, const Tensor& t, int64_t rows) const;
  // out[j] = in[index[j]]; out[index[j]] = in[j] (zero elsewhere), on the rows' device.
  Tensor gather(const Tensor& in, const Tensor& index) const;
  Tensor scatter(const Tensor& in, const Tensor& index, int64_t rows) const;

  Communicator& ep_;
  int num_experts_;
  int local_experts_;
  bool prepared_ = false;
  int64_t num_copies_ = 0;
  int64_t num_received_ = 0;
  // send_order_[j] = the copy packed at row j (kept copies only).
  std::vector<int64_t> send_order_;
  std::vector<int64_t> send_counts_, recv_counts_;
  // recv_to_grouped_[j] = the row of dispatch's output for received row j.
  std::vector<int64_t> recv_to_grouped_;
  std::vector<int64_t> local_expert_counts_;
  // send_order_ and recv_to_grouped_ as i64 on the rows' device (prepare's `device`).
  Device device_;
  Tensor send_index_, recv_index_;
};

}  // namespace linea::parallel
