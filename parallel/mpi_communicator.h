// The MPI backend of Communicator (CPU tensors; CUDA tensors are staged through host copies).
// MPI_CHECK reports the call, file:line and rank.
//
// Types: f32, f64, i32, i64 everywhere; bf16 only where no arithmetic happens (all_gather,
// all_to_all_v, broadcast, send/recv move it as raw 16-bit words); reductions on bf16 are errors
// (reduce in f32 instead). Counts go to MPI as int elements; larger buffers are an error rather
// than a silent wrap. Bytes are counted by the rule in communicator.h.
//
// Communicators are set to MPI_ERRORS_RETURN so that a failing call becomes a linea::Error that
// names the call, instead of an abort without context.
#pragma once

#include <mpi.h>

#include <memory>

#include "parallel/communicator.h"

namespace linea::parallel {

namespace detail {
[[noreturn]] void throw_mpi_error(const char* call, int code, const char* file, int line);
}  // namespace detail

#define MPI_CHECK(call)                                                                     \
  do {                                                                                      \
    const int linea_mpi_rc_ = (call);                                                       \
    if (linea_mpi_rc_ != MPI_SUCCESS)                                                       \
      ::linea::parallel::detail::throw_mpi_error(#call, linea_mpi_rc_, __FILE__, __LINE__); \
  } while (0)

// Initialises MPI once per process (MPI_THREAD_FUNNELED) and finalises it at exit. If MPI is
// already initialised (by a host program or an earlier MpiRuntime) it is left to its owner: this
// one neither re-initialises nor finalises it.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

 private:
  bool finalize_at_exit_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  // Wraps (does not duplicate) comm; owns it unless it is MPI_COMM_WORLD.
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;
  // MPI_COMM_WORLD; MPI must be initialised (MpiRuntime).
  static std::unique_ptr<MpiCommunicator> world();
  // MPI_Comm_split; the result is an MpiCommunicator (or nullptr for a negative color).
  std::unique_ptr<Communicator> split(int color, int key, std::string name) const override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  MPI_Comm handle() const { return comm_; }

  void all_reduce(Tensor& t, ReduceOp op) override;
  // `in` may be this rank's block of `out` (then no copy of it is made).
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override;
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                    const std::vector<int64_t>& recv_counts) override;
  void broadcast(Tensor& t, int root) override;
  void send(const Tensor& t, int peer, int tag) override;
  // Blocking; the message must hold exactly t.numel() elements.
  void recv(Tensor& t, int peer, int tag) override;
  void barrier() override;

 private:
  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0, size_ = 1;
};

}  // namespace linea::parallel
