#include "parallel/mpi_communicator.h"

#include <spdlog/spdlog.h>

#include <climits>
#include <cstdio>

#include "parallel/collective_checks.h"

namespace linea::parallel {

namespace detail {

void throw_mpi_error(const char* call, int code, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) std::snprintf(text, sizeof text, "?");
  std::string rank = "?";
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int r = -1;
    if (MPI_Comm_rank(MPI_COMM_WORLD, &r) == MPI_SUCCESS) rank = std::to_string(r);
  }
  throw Error(std::string(file) + ":" + std::to_string(line) + ": MPI call failed on rank " + rank +
              ": " + call + ": " + text + " (error " + std::to_string(code) + ")");
}

}  // namespace detail

namespace {

bool mpi_usable() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

// bf16 travels as raw 16-bit words: fine for moving, meaningless for arithmetic (callers that
// reduce have rejected it already).
MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kBF16:
      return MPI_UINT16_T;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
  }
  throw Error("no MPI type for dtype " + std::to_string(static_cast<int>(t)));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  throw Error("unknown ReduceOp " + std::to_string(static_cast<int>(op)));
}

// MPI counts are int; a silent wrap would corrupt memory, so larger messages must be split by the
// caller.
int mpi_count(int64_t n, const char* op, const std::string& group) {
  LINEA_CHECK(n >= 0 && n <= INT_MAX) << op << " on group '" << group << "': " << n
                                      << " elements exceed MPI's int count; split the message";
  return static_cast<int>(n);
}

bool on_gpu(const Tensor& t) { return t.defined() && !t.device().is_cpu(); }

// A CPU buffer with the shape and dtype of `t` (its values when `with_values`).
Tensor host_copy(const Tensor& t, bool with_values) {
  return with_values ? t.cpu() : Tensor::empty(t.shape(), t.dtype(), Device::cpu());
}

}  // namespace

// ---- MpiRuntime -----------------------------------------------------------------------------

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0, finalized = 0;
  MPI_CHECK(MPI_Finalized(&finalized));
  LINEA_CHECK(!finalized) << "MPI was finalised already; it cannot be started again in a process";
  MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    finalize_at_exit_ = true;
    // Only the main thread calls MPI; worker threads just compute. A library that offers less
    // than FUNNELED still works in practice, so this is worth a warning, not a failure.
    if (provided < MPI_THREAD_FUNNELED) {
      spdlog::warn("MPI provides thread level {} < MPI_THREAD_FUNNELED", provided);
    }
  }
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalize_at_exit_ && !finalized) MPI_Finalize();
}

// ---- MpiCommunicator ------------------------------------------------------------------------

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : comm_(comm), name_(std::move(name)) {
  LINEA_USER_CHECK(mpi_usable(), "create a parallel::MpiRuntime at the start of main")
      << "MPI is not initialised (or already finalised)";
  LINEA_CHECK(comm != MPI_COMM_NULL) << "MpiCommunicator '" << name_ << "' given MPI_COMM_NULL";
  MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  // After MPI_Finalize every handle is gone already; freeing then would be an error.
  if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL && mpi_usable()) MPI_Comm_free(&comm_);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world");
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, std::string name) const {
  MPI_Comm out = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &out));
  if (out == MPI_COMM_NULL) return nullptr;
  auto child = std::make_unique<MpiCommunicator>(out, std::move(name));
  child->set_watchdog(watchdog_);
  return child;
}

// CUDA tensors are staged through host copies (this backend does not assume a CUDA-aware MPI):
// the collective runs on the copies and the results are copied back, so a model on GPUs runs over
// MPI ranks (several ranks sharing one GPU included) with exactly the CPU semantics and byte
// counts. The NCCL communicator is the fast path for CUDA tensors.
void MpiCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  const CollectiveWatchdog::Watch watch(watchdog_, "all_reduce", name_);
  if (on_gpu(t)) {
    Tensor h = host_copy(t, true);
    all_reduce(h, op);
    t.copy_from(h);
    return;
  }
  detail::check_tensor("all_reduce", name_, t, true);
  const int n = mpi_count(t.numel(), "all_reduce", name_);
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.raw(), n, mpi_type(t.dtype()), mpi_op(op), comm_));
  stats_.add(CollectiveKind::kAllReduce,
             2 * static_cast<uint64_t>(size_ - 1) * t.nbytes() / static_cast<uint64_t>(size_));
}

void MpiCommunicator::all_gather(const Tensor& in, Tensor& out) {
  const CollectiveWatchdog::Watch watch(watchdog_, "all_gather", name_);
  if (on_gpu(in) || on_gpu(out)) {
    // An in-place gather (in is this rank's block of out) needs no aliasing on the host: the
    // copy of in holds the same values.
    Tensor hout = host_copy(out, false);
    all_gather(host_copy(in, true), hout);
    out.copy_from(hout);
    return;
  }
  detail::check_tensor("all_gather", name_, in, false);
  detail::check_tensor("all_gather", name_, out, false);
  detail::check_same_dtype("all_gather", name_, in, out);
  detail::check_gather_sizes("all_gather", name_, size_, in, out);
  const int n = mpi_count(in.numel(), "all_gather", name_);
  const MPI_Datatype type = mpi_type(in.dtype());
  const void* send = in.raw();
  if (detail::gather_in_place(name_, rank_, in, out)) send = MPI_IN_PLACE;
  MPI_CHECK(MPI_Allgather(send, n, type, out.raw(), n, type, comm_));
  stats_.add(CollectiveKind::kAllGather, in.nbytes() * static_cast<uint64_t>(size_ - 1));
}

void MpiCommunicator::reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
  const CollectiveWatchdog::Watch watch(watchdog_, "reduce_scatter", name_);
  if (on_gpu(in) || on_gpu(out)) {
    Tensor hout = host_copy(out, false);
    reduce_scatter(host_copy(in, true), hout, op);
    out.copy_from(hout);
    return;
  }
  detail::check_tensor("reduce_scatter", name_, in, true);
  detail::check_tensor("reduce_scatter", name_, out, true);
  detail::check_same_dtype("reduce_scatter", name_, in, out);
  detail::check_scatter_sizes("reduce_scatter", name_, size_, in, out);
  detail::check_no_overlap("reduce_scatter", name_, in, out);
  mpi_count(in.numel(), "reduce_scatter", name_);
  const int n = mpi_count(out.numel(), "reduce_scatter", name_);
  MPI_CHECK(
      MPI_Reduce_scatter_block(in.raw(), out.raw(), n, mpi_type(in.dtype()), mpi_op(op), comm_));
  stats_.add(CollectiveKind::kReduceScatter, out.nbytes() * static_cast<uint64_t>(size_ - 1));
}

void MpiCommunicator::all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts,
                                   Tensor& out, const std::vector<int64_t>& recv_counts) {
  const CollectiveWatchdog::Watch watch(watchdog_, "all_to_all_v", name_);
  if (on_gpu(in) || on_gpu(out)) {
    Tensor hout = host_copy(out, false);
    all_to_all_v(host_copy(in, true), send_counts, hout, recv_counts);
    out.copy_from(hout);
    return;
  }
  detail::check_tensor("all_to_all_v", name_, in, false);
  detail::check_tensor("all_to_all_v", name_, out, false);
  const int64_t width = detail::check_all_to_all(name_, size_, in, send_counts, out, recv_counts);
  detail::check_no_overlap("all_to_all_v", name_, in, out);
  std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
  int64_t soff = 0, roff = 0;
  for (int r = 0; r < size_; ++r) {
    // Displacements are ints too, so the running offsets are checked, not only the counts.
    sc[r] = mpi_count(send_counts[r] * width, "all_to_all_v", name_);
    rc[r] = mpi_count(recv_counts[r] * width, "all_to_all_v", name_);
    sd[r] = mpi_count(soff, "all_to_all_v", name_);
    rd[r] = mpi_count(roff, "all_to_all_v", name_);
    soff += sc[r];
    roff += rc[r];
  }
  const MPI_Datatype type = mpi_type(in.dtype());
  MPI_CHECK(MPI_Alltoallv(in.raw(), sc.data(), sd.data(), type, out.raw(), rc.data(), rd.data(),
                          type, comm_));
  uint64_t rows_out = 0;
  for (int r = 0; r < size_; ++r) {
    if (r != rank_) rows_out += static_cast<uint64_t>(send_counts[r]);
  }
  stats_.add(CollectiveKind::kAllToAll, rows_out * width * dtype_size(in.dtype()));
}

void MpiCommunicator::broadcast(Tensor& t, int root) {
  const CollectiveWatchdog::Watch watch(watchdog_, "broadcast", name_);
  if (on_gpu(t)) {
    Tensor h = host_copy(t, true);
    broadcast(h, root);
    t.copy_from(h);
    return;
  }
  detail::check_tensor("broadcast", name_, t, false);
  LINEA_CHECK(root >= 0 && root < size_) << "broadcast on group '" << name_ << "': root " << root
                                         << " is not a rank of this group of " << size_;
  const int n = mpi_count(t.numel(), "broadcast", name_);
  MPI_CHECK(MPI_Bcast(t.raw(), n, mpi_type(t.dtype()), root, comm_));
  stats_.add(CollectiveKind::kBroadcast,
             rank_ == root ? t.nbytes() * static_cast<uint64_t>(size_ - 1) : 0);
}

void MpiCommunicator::send(const Tensor& t, int peer, int tag) {
  const CollectiveWatchdog::Watch watch(watchdog_, "send", name_);
  if (on_gpu(t)) return send(host_copy(t, true), peer, tag);
  detail::check_tensor("send", name_, t, false);
  detail::check_peer("send", name_, size_, rank_, peer);
  LINEA_CHECK(tag >= 0) << "send on group '" << name_ << "': negative tag " << tag;
  const int n = mpi_count(t.numel(), "send", name_);
  MPI_CHECK(MPI_Send(t.raw(), n, mpi_type(t.dtype()), peer, tag, comm_));
  stats_.add(CollectiveKind::kSendRecv, t.nbytes());
}

void MpiCommunicator::recv(Tensor& t, int peer, int tag) {
  const CollectiveWatchdog::Watch watch(watchdog_, "recv", name_);
  if (on_gpu(t)) {
    Tensor h = host_copy(t, false);
    recv(h, peer, tag);
    t.copy_from(h);
    return;
  }
  detail::check_tensor("recv", name_, t, false);
  detail::check_peer("recv", name_, size_, rank_, peer);
  LINEA_CHECK(tag >= 0) << "recv on group '" << name_ << "': negative tag " << tag;
  const int n = mpi_count(t.numel(), "recv", name_);
  const MPI_Datatype type = mpi_type(t.dtype());
  MPI_Status status;
  MPI_CHECK(MPI_Recv(t.raw(), n, type, peer, tag, comm_, &status));
  int got = 0;
  MPI_CHECK(MPI_Get_count(&status, type, &got));
  LINEA_CHECK(got == n) << "recv on group '" << name_ << "' from rank " << peer << " (tag " << tag
                        << "): expected " << n << " " << dtype_name(t.dtype())
                        << " elements, the message had " << got;
  stats_.add(CollectiveKind::kSendRecv, 0);
}

void MpiCommunicator::barrier() {
  const CollectiveWatchdog::Watch watch(watchdog_, "barrier", name_);
  MPI_CHECK(MPI_Barrier(comm_));
}

}  // namespace linea::parallel
