// The MPI backend of Communicator (CPU tensors). MPI_CHECK reports the call, file:line and rank.
#pragma once

#include <mpi.h>

#include <memory>

#include "parallel/communicator.h"

namespace linea::parallel {

// Initialises MPI once per process (MPI_THREAD_FUNNELED) and finalises it at exit.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
};

class MpiCommunicator final : public Communicator {
 public:
  // Wraps (does not duplicate) comm; owns it unless it is MPI_COMM_WORLD.
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;
  static std::unique_ptr<MpiCommunicator> world();
  // A new communicator of the ranks that pass the same color, ordered by key.
  std::unique_ptr<MpiCommunicator> split(int color, int key, std::string name) const;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  MPI_Comm handle() const { return comm_; }

  void all_reduce(Tensor& t, ReduceOp op) override;
  void all_gather(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override;
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                    const std::vector<int64_t>& recv_counts) override;
  void broadcast(Tensor& t, int root) override;
  void send(const Tensor& t, int peer, int tag) override;
  void recv(Tensor& t, int peer, int tag) override;
  void barrier() override;

 private:
  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0, size_ = 1;
};

}  // namespace linea::parallel
