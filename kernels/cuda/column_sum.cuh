// Internal to kernels/cuda: sums over the rows of [B, R, C] blocks, out[b, c] = (or +=)
// sum_r x[b, r, c], deterministic (no atomics): the rows of each (b, column tile) are cut into
// splits, each block sums its split's rows in a fixed order in f64 and writes its partial, and a
// second kernel adds the partials in split order. Used for the bias and per-head parameter
// gradients of the gates and for the segment log decay (a sum over time).
#pragma once

#include "kernels/cuda/common.cuh"

namespace linea::kernels::cuda {
// Each including file gets its own copy (internal linkage), as for a static function.
namespace {

constexpr int kColTile = 32, kColRows = 8;  // block (32 columns, 8 row phases)

template <typename T>
__global__ void column_partial_kernel(const T* x, int64_t R, int C, int64_t rows_per_split,
                                      double* partial) {
  __shared__ double part[kColRows][kColTile + 1];
  const int c = blockIdx.x * kColTile + threadIdx.x, b = blockIdx.z, split = blockIdx.y;
  const int64_t r0 = split * rows_per_split;
  const int64_t r1 = r0 + rows_per_split < R ? r0 + rows_per_split : R;
  double acc = 0;
  if (c < C) {
    const T* base = x + (int64_t(b) * R) * C + c;
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColRows) acc += to_float(base[r * C]);
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double s = 0;
#pragma unroll
    for (int k = 0; k < kColRows; ++k) s += part[k][threadIdx.x];
    partial[(int64_t(b) * gridDim.y + split) * C + c] = s;
  }
}

__global__ void column_finish_kernel(const double* partial, int B, int splits, int C,
                                     bool accumulate, float* out) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= int64_t(B) * C) return;
  const int64_t b = i / C, c = i % C;
  double s = 0;
  for (int k = 0; k < splits; ++k) s += partial[(b * splits + k) * C + c];
  out[i] = static_cast<float>(accumulate ? double(out[i]) + s : s);
}

// out [B, C] f32 on the device of `dev` (its current stream); x [B, R, C] of T.
template <typename T>
void column_sums(const T* x, int B, int64_t R, int C, float* out, bool accumulate,
                 const OnDevice& dev) {
  if (int64_t(B) * C == 0) return;
  const int tiles = (C + kColTile - 1) / kColTile;
  // About two blocks per multiprocessor in all, each with at least 256 rows.
  const int64_t want = (2 * int64_t(multiprocessors(dev.index)) + B * tiles - 1) / (B * tiles);
  int64_t splits = R / 256 < want ? R / 256 : want;
  if (splits < 1) splits = 1;
  const int64_t rows_per_split = (R + splits - 1) / splits;
  splits = R > 0 ? (R + rows_per_split - 1) / rows_per_split : 1;
  Tensor partial = Tensor::empty({int64_t(B) * splits * C}, DType::kF64, Device::cuda(dev.index));
  column_partial_kernel<T>
      <<<dim3(tiles, static_cast<unsigned>(splits), B), dim3(kColTile, kColRows), 0, dev.stream>>>(
          x, R, C, R > 0 ? rows_per_split : 1, partial.data<double>());
  CUDA_CHECK_LAUNCH();
  const int64_t n = int64_t(B) * C;
  column_finish_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, dev.stream>>>(
      partial.data<double>(), B, static_cast<int>(splits), C, accumulate, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace
}  // namespace linea::kernels::cuda
