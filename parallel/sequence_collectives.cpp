#include "parallel/sequence_collectives.h"

namespace linea::parallel {
namespace {

// Elements of T rows of one sequence.
int64_t rows_elements(const Tensor& x, int64_t rows) {
  return shape_numel(Shape(x.shape().begin() + 2, x.shape().end())) * rows;
}

// Row `di` of dst [n, block] = row `si` of src [n, block]: one contiguous copy on the tensors'
// device (a device-to-device copy for CUDA tensors).
void copy_block(Tensor& dst, int64_t di, const Tensor& src, int64_t si) {
  Tensor d = dst.slice(di, di + 1);
  d.copy_from(src.slice(si, si + 1));
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
  const int64_t block = rows_elements(local, L);
  const Tensor src = gathered.view({W * B, block});
  Tensor dst = whole.view({B * W, block});
  for (int64_t w = 0; w < W; ++w)
    for (int64_t b = 0; b < B; ++b) copy_block(dst, b * W + w, src, w * B + b);
  return whole;
}

Tensor reduce_scatter_time(Communicator& comm, const Tensor& whole) {
  const int64_t W = comm.size(), B = whole.dim(0);
  LINEA_CHECK(whole.ndim() >= 2 && whole.dim(1) % W == 0)
      << "reduce_scatter_time: " << shape_str(whole.shape()) << " over " << W << " ranks";
  const int64_t L = whole.dim(1) / W;
  Tensor ordered = Tensor::empty({whole.numel()}, whole.dtype());
  const int64_t block = rows_elements(whole, L);
  const Tensor src = whole.view({B * W, block});
  Tensor dst = ordered.view({W * B, block});
  for (int64_t w = 0; w < W; ++w)
    for (int64_t b = 0; b < B; ++b) copy_block(dst, w * B + b, src, b * W + w);
  Shape s = whole.shape();
  s[1] = L;
  Tensor local = Tensor::empty(s, whole.dtype());
  Tensor flat = local.view({-1});
  comm.reduce_scatter(ordered, flat);
  return local;
}

}  // namespace linea::parallel
