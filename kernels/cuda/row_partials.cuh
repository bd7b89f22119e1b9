// Internal to kernels/cuda: the second half of a deterministic sum over rows. A first kernel (the
// caller's) cuts the rows into `splits` and writes one f64 partial per (split, output) to
// partial[split * n + i]; add_partials adds them in split order to out[i] (`+=`), whatever the
// output's storage dtype. Used where an output sums products over rows that are too many to
// store (the short convolution's dw, Hedgehog's dW).
#pragma once

#include "kernels/cuda/common.cuh"

namespace linea::kernels::cuda {
namespace {

template <typename O>
__global__ void add_partials_kernel(const double* partial, int splits, int64_t n, O* out) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  double s = to_float(out[i]);
  for (int k = 0; k < splits; ++k) s += partial[k * n + i];
  out[i] = from_float<O>(static_cast<float>(s));
}

// out (f32 or bf16, n elements) += the partials' sum over splits.
inline void add_partials(const Tensor& partial, int splits, int64_t n, Tensor& out,
                         const OnDevice& dev) {
  if (n == 0) return;
  dispatch(out.dtype(), [&](auto tag) {
    using O = decltype(tag);
    add_partials_kernel<O><<<static_cast<unsigned>((n + 255) / 256), 256, 0, dev.stream>>>(
        partial.data<double>(), splits, n, ptr<O>(out));
  });
  CUDA_CHECK_LAUNCH();
}

// Splits of `rows` rows for `tiles` independent blocks: about two blocks per multiprocessor in
// all, each with at least `min_rows` rows.
inline int row_splits(int64_t rows, int64_t tiles, int device, int64_t min_rows = 256) {
  const int64_t want = (2 * int64_t(multiprocessors(device)) + tiles - 1) / tiles;
  int64_t s = rows / min_rows < want ? rows / min_rows : want;
  return static_cast<int>(s < 1 ? 1 : (s > 1024 ? 1024 : s));
}

}  // namespace
}  // namespace linea::kernels::cuda
