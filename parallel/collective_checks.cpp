#include "parallel/collective_checks.h"

#include <numeric>
#include <sstream>

namespace linea::parallel::detail {

namespace {
std::string where(const char* op, const std::string& group) {
  return std::string(op) + " on group '" + group + "'";
}
bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const char* pa = static_cast<const char*>(a.raw());
  const char* pb = static_cast<const char*>(b.raw());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}
std::string counts_str(const std::vector<int64_t>& c) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < c.size(); ++i) os << (i ? ", " : "") << c[i];
  os << "]";
  return os.str();
}
}  // namespace

void check_no_overlap(const char* op, const std::string& group, const Tensor& in,
                      const Tensor& out) {
  LINEA_CHECK(!overlaps(in, out)) << where(op, group) << ": in and out overlap";
}

bool gather_in_place(const std::string& group, int rank, const Tensor& in, const Tensor& out) {
  if (!overlaps(in, out)) return false;
  // ZeRO-style callers gather into the buffer that already holds their own shard.
  LINEA_CHECK(in.raw() == static_cast<const char*>(out.raw()) + rank * in.nbytes())
      << where("all_gather", group) << ": in overlaps out but is not rank " << rank
      << "'s block of it";
  return true;
}

void check_tensor(const char* op, const std::string& group, const Tensor& t, bool reduces) {
  LINEA_CHECK(t.defined()) << where(op, group) << ": undefined tensor";
  LINEA_CHECK(t.device().is_cpu())
      << where(op, group) << ": tensor on " << t.device().str()
      << "; this communicator moves CPU tensors (CUDA tensors go through the NCCL communicator)";
  LINEA_CHECK(!reduces || t.dtype() != DType::kBF16)
      << where(op, group) << ": bf16 cannot be reduced here; reduce an f32 copy instead";
}

void check_same_dtype(const char* op, const std::string& group, const Tensor& a, const Tensor& b) {
  LINEA_CHECK(a.dtype() == b.dtype()) << where(op, group) << ": in is " << dtype_name(a.dtype())
                                      << " but out is " << dtype_name(b.dtype());
}

void check_gather_sizes(const char* op, const std::string& group, int size, const Tensor& in,
                        const Tensor& out) {
  LINEA_CHECK(out.numel() == size * in.numel())
      << where(op, group) << ": out must hold " << size << " ranks x " << in.numel()
      << " elements = " << size * in.numel() << ", but in is " << shape_str(in.shape())
      << " and out is " << shape_str(out.shape());
}

void check_scatter_sizes(const char* op, const std::string& group, int size, const Tensor& in,
                         const Tensor& out) {
  LINEA_CHECK(in.numel() == size * out.numel())
      << where(op, group) << ": in must hold " << size << " ranks x " << out.numel()
      << " elements = " << size * out.numel() << ", but in is " << shape_str(in.shape())
      << " and out is " << shape_str(out.shape());
}

void check_peer(const char* op, const std::string& group, int size, int rank, int peer) {
  LINEA_CHECK(peer >= 0 && peer < size)
      << where(op, group) << ": peer " << peer << " is not a rank of this group of " << size;
  LINEA_CHECK(peer != rank) << where(op, group) << ": peer " << peer
                            << " is this rank; a blocking message to oneself never completes";
}

int64_t row_width(const Tensor& t) {
  int64_t w = 1;
  for (int64_t i = 1; i < t.ndim(); ++i) w *= t.dim(i);
  return w;
}

int64_t check_all_to_all(const std::string& group, int size, const Tensor& in,
                         const std::vector<int64_t>& send_counts, const Tensor& out,
                         const std::vector<int64_t>& recv_counts) {
  const char* op = "all_to_all_v";
  LINEA_CHECK(in.defined() && out.defined()) << where(op, group) << ": undefined tensor";
  check_same_dtype(op, group, in, out);
  LINEA_CHECK(in.ndim() >= 1 && out.ndim() >= 1)
      << where(op, group) << ": in and out need a leading (row) dimension, got "
      << shape_str(in.shape()) << " and " << shape_str(out.shape());
  const int64_t width = row_width(in);
  LINEA_CHECK(row_width(out) == width)
      << where(op, group) << ": rows differ in width: in " << shape_str(in.shape()) << ", out "
      << shape_str(out.shape());
  LINEA_CHECK(static_cast<int>(send_counts.size()) == size &&
              static_cast<int>(recv_counts.size()) == size)
      << where(op, group) << ": need one count per rank (" << size << "), got "
      << send_counts.size() << " send and " << recv_counts.size() << " receive counts";
  for (int r = 0; r < size; ++r) {
    LINEA_CHECK(send_counts[r] >= 0 && recv_counts[r] >= 0)
        << where(op, group) << ": negative count; send " << counts_str(send_counts) << ", receive "
        << counts_str(recv_counts);
  }
  const int64_t sent = std::accumulate(send_counts.begin(), send_counts.end(), int64_t{0});
  const int64_t received = std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0});
  LINEA_CHECK(sent == in.dim(0)) << where(op, group) << ": send counts " << counts_str(send_counts)
                                 << " sum to " << sent << " rows, but in " << shape_str(in.shape())
                                 << " has " << in.dim(0);
  LINEA_CHECK(received == out.dim(0))
      << where(op, group) << ": receive counts " << counts_str(recv_counts) << " sum to "
      << received << " rows, but out " << shape_str(out.shape()) << " has " << out.dim(0);
  return width;
}

}  // namespace linea::parallel::detail
