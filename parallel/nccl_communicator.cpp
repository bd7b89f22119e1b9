#include "parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>

#include "core/tensor/cuda_device.h"
#include "core/tensor/cuda_stream.h"
#include "core/util/cuda_check.h"
#include "parallel/collective_checks.h"

namespace linea::parallel {
namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
  }
  throw Error("no NCCL type for dtype " + std::to_string(static_cast<int>(t)));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  throw Error("unknown ReduceOp " + std::to_string(static_cast<int>(op)));
}

}  // namespace

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, int device,
                                                           std::string name) {
  cuda::check_device(device, "NcclCommunicator");
  ncclUniqueId id;
  static_assert(sizeof(id) % sizeof(int64_t) == 0);
  Tensor blob = Tensor::zeros({static_cast<int64_t>(sizeof(id) / sizeof(int64_t))}, DType::kI64);
  if (bootstrap.rank() == 0) {
    NCCL_CHECK(ncclGetUniqueId(&id));
    std::memcpy(blob.raw(), &id, sizeof(id));
  }
  bootstrap.broadcast(blob, 0);
  std::memcpy(&id, blob.raw(), sizeof(id));
  cuda::DeviceGuard guard(device);
  ncclComm_t comm = nullptr;
  NCCL_CHECK(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()));
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(comm, device, std::move(name)));
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, int device, std::string name)
    : comm_(comm), device_(device), name_(std::move(name)) {
  NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  NCCL_CHECK(ncclCommCount(comm_, &size_));
}

NcclCommunicator::~NcclCommunicator() {
  // No throwing from a destructor; errors are moot here.
  if (side_stream_) cudaStreamDestroy(side_stream_);
  if (comm_) ncclCommDestroy(comm_);
}

void NcclCommunicator::check_device_tensor(const char* op, const Tensor& t, bool reduces) const {
  LINEA_CHECK(t.defined()) << op << " on group '" << name_ << "': undefined tensor";
  LINEA_CHECK(!t.device().is_cpu() && t.device().index == device_)
      << op << " on NCCL group '" << name_ << "': the tensor is on " << t.device().str()
      << ", this communicator on cuda:" << device_;
  LINEA_CHECK(!reduces || t.dtype() != DType::kBF16)
      << op << " on group '" << name_ << "': bf16 reductions lose too much; reduce in f32";
}

void NcclCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  const CollectiveWatchdog::Watch watch(watchdog_, "all_reduce", name_);
  if (t.defined() && t.device().is_cpu()) {
    // Host values (scalars, statistics): through the device and back.
    Tensor d = t.to(Device::cuda(device_));
    all_reduce(d, op);
    t.copy_from(d.cpu());
    return;
  }
  check_device_tensor("all_reduce", t, true);
  cuda::DeviceGuard guard(device_);
  NCCL_CHECK(ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                           nccl_op(op), comm_, cuda::current_stream(device_)));
  stats_.add(CollectiveKind::kAllReduce,
             2 * static_cast<uint64_t>(size_ - 1) * t.nbytes() / static_cast<uint64_t>(size_));
}

// Host tensors (counts, statistics, the CPU side of a mixed program) are staged through the
// device: the collective runs on device copies, and results come back. The counts and the MoE
// dispatch metadata are small; model activations and gradients are CUDA tensors already.
namespace {
bool on_host(const Tensor& t) { return t.defined() && t.device().is_cpu(); }
}  // namespace

void NcclCommunicator::all_gather(const Tensor& in, Tensor& out) {
  const CollectiveWatchdog::Watch watch(watchdog_, "all_gather", name_);
  if (on_host(in) || on_host(out)) {
    Tensor dout = Tensor::empty(out.shape(), out.dtype(), Device::cuda(device_));
    all_gather(in.to(Device::cuda(device_)), dout);
    out.copy_from(dout);
    return;
  }
  check_device_tensor("all_gather", in, false);
  check_device_tensor("all_gather", out, false);
  detail::check_same_dtype("all_gather", name_, in, out);
  detail::check_gather_sizes("all_gather", name_, size_, in, out);
  detail::gather_in_place(name_, rank_, in, out);  // NCCL takes the in-place form as it is
  cuda::DeviceGuard guard(device_);
  NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), static_cast<size_t>(in.numel()),
                           nccl_type(in.dtype()), comm_, cuda::current_stream(device_)));
  stats_.add(CollectiveKind::kAllGather, in.nbytes() * static_cast<uint64_t>(size_ - 1));
}

namespace {
// An all_gather queued on the side stream: `done` marks its end there.
class NcclPending final : public PendingCollective {
 public:
  NcclPending(int device, cudaEvent_t done, Tensor in, Tensor out)
      : device_(device), done_(done), in_(std::move(in)), out_(std::move(out)) {}
  ~NcclPending() override {
    if (done_) {
      cuda::DeviceGuard guard(device_);
      cudaStreamWaitEvent(cuda::current_stream(device_), done_, 0);
      cudaEventDestroy(done_);
    }
  }
  void wait() override {
    if (!done_) return;
    cuda::DeviceGuard guard(device_);
    CUDA_CHECK(cudaStreamWaitEvent(cuda::current_stream(device_), done_, 0));
    CUDA_CHECK(cudaEventDestroy(done_));
    done_ = nullptr;
    // From here the current stream is ordered after the gather, so the caching allocator may
    // hand the buffers out again on it.
    in_ = out_ = Tensor();
  }

 private:
  int device_;
  cudaEvent_t done_;
  Tensor in_, out_;
};
}  // namespace

std::unique_ptr<PendingCollective> NcclCommunicator::all_gather_async(const Tensor& in,
                                                                      Tensor& out) {
  if (on_host(in) || on_host(out)) return Communicator::all_gather_async(in, out);
  const CollectiveWatchdog::Watch watch(watchdog_, "all_gather", name_);
  check_device_tensor("all_gather", in, false);
  check_device_tensor("all_gather", out, false);
  detail::check_same_dtype("all_gather", name_, in, out);
  detail::check_gather_sizes("all_gather", name_, size_, in, out);
  detail::gather_in_place(name_, rank_, in, out);
  cuda::DeviceGuard guard(device_);
  if (!side_stream_) CUDA_CHECK(cudaStreamCreateWithFlags(&side_stream_, cudaStreamNonBlocking));
  const cudaStream_t compute = cuda::current_stream(device_);
  cudaEvent_t ready = nullptr, done = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(ready, compute));
  CUDA_CHECK(cudaStreamWaitEvent(side_stream_, ready, 0));
  CUDA_CHECK(cudaEventDestroy(ready));  // released once the wait has been satisfied
  NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), static_cast<size_t>(in.numel()),
                           nccl_type(in.dtype()), comm_, side_stream_));
  CUDA_CHECK(cudaEventRecord(done, side_stream_));
  stats_.add(CollectiveKind::kAllGather, in.nbytes() * static_cast<uint64_t>(size_ - 1));
  return std::make_unique<NcclPending>(device_, done, in, out);
}

void NcclCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  const CollectiveWatchdog::Watch watch(watchdog_, "reduce_scatter", name_);
  if (on_host(in) || on_host(out)) {
    Tensor dout = Tensor::empty(out.shape(), out.dtype(), Device::cuda(device_));
    reduce_scatter(in.to(Device::cuda(device_)), dout, op);
    out.copy_from(dout);
    return;
  }
  check_device_tensor("reduce_scatter", in, true);
  check_device_tensor("reduce_scatter", out, true);
  detail::check_same_dtype("reduce_scatter", name_, in, out);
  detail::check_scatter_sizes("reduce_scatter", name_, size_, in, out);
  detail::check_no_overlap("reduce_scatter", name_, in, out);
  cuda::DeviceGuard guard(device_);
  NCCL_CHECK(ncclReduceScatter(in.raw(), out.raw(), static_cast<size_t>(out.numel()),
                               nccl_type(in.dtype()), nccl_op(op), comm_,
                               cuda::current_stream(device_)));
  stats_.add(CollectiveKind::kReduceScatter, out.nbytes() * static_cast<uint64_t>(size_ - 1));
}

void NcclCommunicator::all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts,
                                    Tensor& out, const std::vector<int64_t>& recv_counts) {
  const CollectiveWatchdog::Watch watch(watchdog_, "all_to_all_v", name_);
  if (on_host(in) || on_host(out)) {
    Tensor dout = Tensor::empty(out.shape(), out.dtype(), Device::cuda(device_));
    all_to_all_v(in.to(Device::cuda(device_)), send_counts, dout, recv_counts);
    out.copy_from(dout);
    return;
  }
  check_device_tensor("all_to_all_v", in, false);
  check_device_tensor("all_to_all_v", out, false);
  const int64_t width = detail::check_all_to_all(name_, size_, in, send_counts, out, recv_counts);
  detail::check_no_overlap("all_to_all_v", name_, in, out);
  const size_t row_bytes = static_cast<size_t>(width) * dtype_size(in.dtype());
  const auto* src = static_cast<const char*>(in.raw());
  auto* dst = static_cast<char*>(out.raw());
  cuda::DeviceGuard guard(device_);
  const cudaStream_t stream = cuda::current_stream(device_);
  // Raw bytes: any dtype moves, nothing is summed.
  NCCL_CHECK(ncclGroupStart());
  size_t soff = 0, roff = 0;
  for (int r = 0; r < size_; ++r) {
    const size_t sb = static_cast<size_t>(send_counts[r]) * row_bytes;
    const size_t rb = static_cast<size_t>(recv_counts[r]) * row_bytes;
    if (sb > 0) NCCL_CHECK(ncclSend(src + soff, sb, ncclUint8, r, comm_, stream));
    if (rb > 0) NCCL_CHECK(ncclRecv(dst + roff, rb, ncclUint8, r, comm_, stream));
    soff += sb;
    roff += rb;
  }
  NCCL_CHECK(ncclGroupEnd());
  uint64_t rows_out = 0;
  for (int r = 0; r < size_; ++r) {
    if (r != rank_) rows_out += static_cast<uint64_t>(send_counts[r]);
  }
  stats_.add(CollectiveKind::kAllToAll, rows_out * row_bytes);
}

void NcclCommunicator::broadcast(Tensor& t, int root) {
  const CollectiveWatchdog::Watch watch(watchdog_, "broadcast", name_);
  LINEA_CHECK(root >= 0 && root < size_) << "broadcast on group '" << name_ << "': root " << root
                                         << " is not a rank of this group of " << size_;
  if (t.defined() && t.device().is_cpu()) {
    Tensor d = t.to(Device::cuda(device_));
    broadcast(d, root);
    t.copy_from(d.cpu());
    return;
  }
  check_device_tensor("broadcast", t, false);
  cuda::DeviceGuard guard(device_);
  NCCL_CHECK(ncclBroadcast(t.raw(), t.raw(), static_cast<size_t>(t.numel()), nccl_type(t.dtype()),
                           root, comm_, cuda::current_stream(device_)));
  stats_.add(CollectiveKind::kBroadcast,
             rank_ == root ? t.nbytes() * static_cast<uint64_t>(size_ - 1) : 0);
}

void NcclCommunicator::send(const Tensor& t, int peer, int tag) {
  const CollectiveWatchdog::Watch watch(watchdog_, "send", name_);
  if (on_host(t)) return send(t.to(Device::cuda(device_)), peer, tag);
  check_device_tensor("send", t, false);
  detail::check_peer("send", name_, size_, rank_, peer);
  LINEA_CHECK(tag >= 0) << "send on group '" << name_ << "': negative tag " << tag;
  cuda::DeviceGuard guard(device_);
  NCCL_CHECK(ncclSend(t.raw(), t.nbytes(), ncclUint8, peer, comm_, cuda::current_stream(device_)));
  stats_.add(CollectiveKind::kSendRecv, t.nbytes());
}

void NcclCommunicator::recv(Tensor& t, int peer, int tag) {
  const CollectiveWatchdog::Watch watch(watchdog_, "recv", name_);
  if (on_host(t)) {
    Tensor d = Tensor::empty(t.shape(), t.dtype(), Device::cuda(device_));
    recv(d, peer, tag);
    t.copy_from(d);
    return;
  }
  check_device_tensor("recv", t, false);
  detail::check_peer("recv", name_, size_, rank_, peer);
  LINEA_CHECK(tag >= 0) << "recv on group '" << name_ << "': negative tag " << tag;
  cuda::DeviceGuard guard(device_);
  NCCL_CHECK(ncclRecv(t.raw(), t.nbytes(), ncclUint8, peer, comm_, cuda::current_stream(device_)));
  stats_.add(CollectiveKind::kSendRecv, 0);
}

void NcclCommunicator::barrier() {
  const CollectiveWatchdog::Watch watch(watchdog_, "barrier", name_);
  Tensor one = Tensor::zeros({1}, DType::kI32, Device::cuda(device_));
  cuda::DeviceGuard guard(device_);
  const cudaStream_t stream = cuda::current_stream(device_);
  NCCL_CHECK(ncclAllReduce(one.raw(), one.raw(), 1, ncclInt32, ncclSum, comm_, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, std::string name) const {
  cuda::DeviceGuard guard(device_);
  ncclComm_t out = nullptr;
  NCCL_CHECK(ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &out, nullptr));
  if (color < 0 || out == nullptr) return nullptr;
  auto child = std::unique_ptr<Communicator>(new NcclCommunicator(out, device_, std::move(name)));
  child->set_watchdog(watchdog_);
  return child;
}

}  // namespace linea::parallel
