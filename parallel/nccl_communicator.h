// The NCCL backend of Communicator (CUDA tensors), built with LINEA_CUDA. One GPU per rank: the
// communicator is bound to one device and queues every collective on that device's current stream
// (core/tensor/cuda_stream.h), returning before the data has moved; work queued later on the same
// stream sees the result. NCCL_CHECK reports the call, file:line and rank.
//
// Bootstrap: NcclCommunicator::create is collective over an existing communicator of the same
// ranks (MPI, or SelfCommunicator for one rank): its rank 0 makes the NCCL unique id and broadcasts
// it there, then every rank joins. split() makes sub-groups with ncclCommSplit, so the ProcessGrid
// builds DP, SP, EP groups over NCCL exactly as over MPI.
//
// Tensors: CUDA tensors on this communicator's device; f32, f64, i32, i64 everywhere, bf16 only
// where nothing is summed (as for MPI: reduce in f32). all_reduce and broadcast also take CPU
// tensors (staged through the device and back, synchronously): the trainer's scalars and small
// statistics go through them. Bytes are counted by the rule in communicator.h, so MPI and NCCL runs
// report the same numbers.
//
// Differences from MPI: send/recv ignore the tag (NCCL matches messages by order between a pair of
// ranks), and recv cannot check the sender's size (both sides must agree, as every caller here
// does).
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

typedef struct ncclComm* ncclComm_t;
typedef struct CUstream_st* cudaStream_t;

namespace linea::parallel {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`, whose ranks become this communicator's ranks (same order).
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, int device,
                                                  std::string name);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int device() const { return device_; }
  ncclComm_t handle() const { return comm_; }

  void all_reduce(Tensor& t, ReduceOp op) override;
  // `in` may be this rank's block of `out` (NCCL's in-place form).
  void all_gather(const Tensor& in, Tensor& out) override;
  // On the communicator's own stream (created on first use), after the work queued so far on
  // the device's current stream; wait() makes the current stream wait for it. Host tensors are
  // staged and gathered at once.
  std::unique_ptr<PendingCollective> all_gather_async(const Tensor& in, Tensor& out) override;
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override;
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, Tensor& out,
                    const std::vector<int64_t>& recv_counts) override;
  void broadcast(Tensor& t, int root) override;
  void send(const Tensor& t, int peer, int tag) override;
  void recv(Tensor& t, int peer, int tag) override;
  // Waits until every rank has reached it and this rank's queued work is done.
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key, std::string name) const override;

 private:
  NcclCommunicator(ncclComm_t comm, int device, std::string name);
  void check_device_tensor(const char* op, const Tensor& t, bool reduces) const;

  ncclComm_t comm_;
  int device_;
  std::string name_;
  int rank_ = 0, size_ = 1;
  cudaStream_t side_stream_ = nullptr;  // all_gather_async
};

}  // namespace linea::parallel
