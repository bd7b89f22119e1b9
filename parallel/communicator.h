// The one interface every collective goes through. Backends: MPI (CPU tensors, this file's
// mpi_communicator.h) and, with the CUDA backend, NCCL (CUDA tensors). Communicators are objects
// built by the ProcessGrid and passed to whoever needs them; there are no global groups.
//
// Backward partners (STYLE.md 6): all_gather <-> reduce_scatter, all_to_all_v <-> all_to_all_v
// with send and receive counts swapped, send <-> recv.
//
// Every call counts the bytes this rank sends, per collective kind (CommStats), so the trainer can
// report communication per step.
//
// The byte rule (one rule for every backend, so numbers compare across MPI and NCCL): bytes_sent is
// the payload of this rank that must reach other ranks, each destination counted once, as if the
// collective were done with direct messages and no relaying. What the library really does inside
// (trees, rings, fused steps) is deliberately not visible. With W = size():
//   all_gather      in.nbytes() * (W - 1)
//   reduce_scatter  out.nbytes() * (W - 1)          (its block of every other rank)
//   all_reduce      2 * (W - 1) * t.nbytes() / W    (as reduce_scatter + all_gather, which is the
//                                                    bandwidth-optimal schedule; integer division)
//   all_to_all_v    rows sent to ranks other than this one * row bytes
//   broadcast       t.nbytes() * (W - 1) on the root, 0 elsewhere
//   send / recv     t.nbytes() for send, 0 for recv (both count as a kSendRecv call)
// A group of one rank (SelfCommunicator) sends nothing and counts nothing; barrier counts nothing.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/tensor.h"
#include "parallel/watchdog.h"

namespace linea::parallel {

enum class ReduceOp { kSum, kMax, kMin };

enum class CollectiveKind : int {
  kAllReduce = 0,
  kAllGather,
  kReduceScatter,
  kAllToAll,
  kSendRecv,
  kBroadcast,
  kCount
};
const char* collective_name(CollectiveKind k);

struct CommStats {
  std::array<uint64_t, static_cast<int>(CollectiveKind::kCount)> bytes_sent{};
  std::array<uint64_t, static_cast<int>(CollectiveKind::kCount)> calls{};
  void add(CollectiveKind k, uint64_t bytes) {
    bytes_sent[static_cast<int>(k)] += bytes;
    calls[static_cast<int>(k)] += 1;
  }
  void reset() { *this = CommStats{}; }
};

// A collective in flight (Communicator::all_gather_async). wait() orders the caller's later work
// after it: on NCCL the device's current stream waits for the communicator's side stream (the
// host does not block); the MPI and single-rank backends finish the collective inside the call,
// so their wait() has nothing left to do. The pending object keeps the buffers alive until then;
// destroying it without wait() waits.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A short name for logs ("world", "dp", "sp", ...).
  virtual const std::string& name() const = 0;

  // In place over every rank of the group. f32, f64, i32, i64.
  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::kSum) = 0;
  // Scalar convenience (f64).
  double all_reduce_scalar(double v, ReduceOp op = ReduceOp::kSum);
  // out = concatenation of every rank's `in` along the leading dimension, in rank order;
  // out.numel() == size() * in.numel().
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  // all_gather that may still be moving data when it returns: work queued on the current stream
  // before the call is what it sends; `out` may be read only after wait(). Until then the caller
  // issues no other collective on this group (LASP-2 overlaps it with the scan from a zero state).
  // The default runs all_gather and returns a finished collective.
  virtual std::unique_ptr<PendingCollective> all_gather_async(const Tensor& in, Tensor& out);
  // in.numel() == size() * out.numel(); rank r gets the reduction of every rank's r-th block.
  virtual void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op = ReduceOp::kSum) = 0;
  // Rows of `in` (leading dimension) go to ranks by send_counts (in rank order); `out` receives
  // recv_counts rows from each rank, in rank order. Row width = the product of the dims after
  // the first (so a rank with no rows to send still passes a [0, ...] tensor).
  virtual void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                            const std::vector<int64_t>& recv_counts) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void send(const Tensor& t, int peer, int tag) = 0;
  virtual void recv(Tensor& t, int peer, int tag) = 0;
  virtual void barrier() = 0;

  // A new group of the ranks of this one that pass the same color, ranked by key (ties by rank
  // here). Collective over this group. A negative color means "in no group" and returns nullptr.
  // The ProcessGrid builds its groups through this, so it works over any backend.
  virtual std::unique_ptr<Communicator> split(int color, int key, std::string name) const = 0;

  const CommStats& stats() const { return stats_; }
  CommStats& stats() { return stats_; }

  // The watchdog that watches this group's blocking calls (borrowed; null: none). Groups made by
  // split() inherit it.
  void set_watchdog(CollectiveWatchdog* w) { watchdog_ = w; }
  CollectiveWatchdog* watchdog() const { return watchdog_; }

 protected:
  CommStats stats_;
  CollectiveWatchdog* watchdog_ = nullptr;
};

// A group of one rank: every collective is a copy (or nothing). Used by single-process runs and
// by tests that need no MPI. It validates arguments like the real backends do (bf16 all_reduce
// included), so a call that would fail on W ranks already fails on one.
class SelfCommunicator final : public Communicator {
 public:
  explicit SelfCommunicator(std::string name = "self") : name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  void all_reduce(Tensor& t, ReduceOp op) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp) override;
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                    const std::vector<int64_t>& recv_counts) override;
  void broadcast(Tensor& t, int root) override;
  // There is no other rank to talk to: both are errors.
  void send(const Tensor&, int peer, int) override;
  void recv(Tensor&, int peer, int) override;
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int key, std::string name) const override;

 private:
  std::string name_;
};

}  // namespace linea::parallel
