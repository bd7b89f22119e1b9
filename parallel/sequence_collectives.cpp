#include "parallel/sequence_collectives.h"

#include <cstring>

namespace linea::parallel {
namespace {

// Bytes of T rows of one sequence.
size_t rows_bytes(const Tensor& x, int64_t rows) {
  return dtype_size(x.dtype()) *
         static_cast<size_t>(shape_numel(Shape(x.shape().begin() + 2, x.shape().end()))) * rows;
}

}  // namespace

Tensor all_gather_time(Communicator& comm, const Tensor& local) {
  LINEA_CHECK(local.ndim() >= 2) << "all_gather_time: " << shape_str(local.shape());
  const int64_t W = comm.size(), B = local.dim(0), L = local.dim(1);
  // The collective concatenates whole buffers in rank order: [W][B][L]...; reorder to [B][W L].
  Tensor gathered = Tensor::empty({W * local.numel()}, local.dtype());
  comm.all_gather(local.view({-1}), gathered);
  Shape s = local.shape();
  s[1] = W * L;
  Tensor whole = Tensor::empty(s, local.dtype());
  const size_t block = rows_bytes(local, L);
  const auto* src = static_cast<const char*>(gathered.raw());
  auto* dst = static_cast<char*>(whole.raw());
  for (int64_t w = 0; w < W; ++w)
    for (int64_t b = 0; b < B; ++b)
      std::memcpy(dst + (b * W + w) * block, src + (w * B + b) * block, block);
  return whole;
}

Tensor reduce_scatter_time(Communicator& comm, const Tensor& whole) {
  const int64_t W = comm.size(), B = whole.dim(0);
  LINEA_CHECK(whole.ndim() >= 2 && whole.dim(1) % W == 0)
      << "reduce_scatter_time: " << shape_str(whole.shape()) << " over " << W << " ranks";
  const int64_t L = whole.dim(1) / W;
  Tensor ordered = Tensor::empty({whole.numel()}, whole.dtype());
  const size_t block = rows_bytes(whole, L);
  const auto* src = static_cast<const char*>(whole.raw());
  auto* dst = static_cast<char*>(ordered.raw());
  for (int64_t w = 0; w < W; ++w)
    for (int64_t b = 0; b < B; ++b)
      std::memcpy(dst + (w * B + b) * block, src + (b * W + w) * block, block);
  Shape s = whole.shape();
  s[1] = L;
  Tensor local = Tensor::empty(s, whole.dtype());
  Tensor flat = local.view({-1});
  comm.reduce_scatter(ordered, flat);
  return local;
}

}  // namespace linea::parallel
