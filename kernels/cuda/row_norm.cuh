// Internal to kernels/cuda: the row-norm kernels shared by RMSNorm (kernels/rmsnorm.h, div = 1/D,
// optional weight) and the L2 norm (kernels/l2norm.h, div = 1, no weight):
//   forward:  rstd = 1 / sqrt(div * sum(x^2) + eps),  y = x * rstd (* w)
//   backward: dx = rstd * (w dy - x_hat * div * sum(x_hat * w * dy)),  dw += sum_rows dy * x_hat
// One block per row (grid-stride), rows read with 16-byte accesses where D and the pointers allow
// (N elements a pack), else element by element. Sums of squares are f32 per thread, reduced over
// the block; rstd is f32. The backward keeps each block's dw partial sums in shared memory (each
// column owned by one thread), writes them to a [blocks, D] buffer, and a second kernel adds the
// columns to dw in a fixed order: dw is deterministic for a given GPU. The callers check shapes.
#pragma once

#include <initializer_list>

#include "kernels/cuda/common.cuh"

namespace linea::kernels::cuda::row_norm {

template <typename T, bool kWeighted, int N>
__global__ void row_norm_forward_kernel(const T* x, const T* w, float eps, float div, int64_t rows,
                                        int d, T* y, float* rstd) {
  __shared__ float scratch[32];
  const int packs = d / N;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    float ss = 0;
    for (int j = threadIdx.x; j < packs; j += blockDim.x) {
      const Pack<T, N> a = load_pack<T, N>(xr, j);
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const float v = to_float(a.v[e]);
        ss += v * v;
      }
    }
    ss = block_sum(ss, scratch);
    const float rs = 1.0f / sqrtf(ss * div + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    // The second read of the row hits the cache.
    for (int j = threadIdx.x; j < packs; j += blockDim.x) {
      const Pack<T, N> a = load_pack<T, N>(xr, j);
      Pack<T, N> wv;
      if constexpr (kWeighted) wv = load_pack<T, N>(w, j);
      Pack<T, N> o;
#pragma unroll
      for (int e = 0; e < N; ++e) {
        float v = to_float(a.v[e]) * rs;
        if constexpr (kWeighted) v *= to_float(wv.v[e]);
        o.v[e] = from_float<T>(v);
      }
      store_pack<T, N>(yr, j, o);
    }
  }
}

template <typename T, bool kWeighted, int N>
__global__ void row_norm_backward_kernel(const T* x, const T* w, const float* rstd, const T* dy,
                                         float div, int64_t rows, int d, T* dx, float* dw_partial) {
  // [N][packs] when weighted: element e of pack j at e * packs + j, so that the threads of a warp
  // (consecutive j) touch consecutive words, free of bank conflicts.
  extern __shared__ float dw_part[];
  __shared__ float scratch[32];
  const int packs = d / N;
  if constexpr (kWeighted) {
    for (int j = threadIdx.x; j < packs; j += blockDim.x) {
#pragma unroll
      for (int e = 0; e < N; ++e) dw_part[e * packs + j] = 0;
    }
  }
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    const T* gr = dy + r * d;
    T* dxr = dx + r * d;
    const float rs = rstd[r];
    float dot = 0;  // sum_j x_hat_j * w_j * dy_j
    for (int j = threadIdx.x; j < packs; j += blockDim.x) {
      const Pack<T, N> a = load_pack<T, N>(xr, j), g = load_pack<T, N>(gr, j);
      Pack<T, N> wv;
      if constexpr (kWeighted) wv = load_pack<T, N>(w, j);
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const float gf = to_float(g.v[e]);
        const float wg = kWeighted ? to_float(wv.v[e]) * gf : gf;
        dot += to_float(a.v[e]) * rs * wg;
      }
    }
    const float mean = block_sum(dot, scratch) * div;
    // The same thread reads x_j and dy_j, then writes dx_j (after the block-wide reduction), so
    // dx may share storage with x or dy.
    for (int j = threadIdx.x; j < packs; j += blockDim.x) {
      const Pack<T, N> a = load_pack<T, N>(xr, j), g = load_pack<T, N>(gr, j);
      Pack<T, N> wv;
      if constexpr (kWeighted) wv = load_pack<T, N>(w, j);
      Pack<T, N> o;
#pragma unroll
      for (int e = 0; e < N; ++e) {
        const float xh = to_float(a.v[e]) * rs;
        const float gf = to_float(g.v[e]);
        if constexpr (kWeighted) dw_part[e * packs + j] += gf * xh;
        const float wg = kWeighted ? to_float(wv.v[e]) * gf : gf;
        o.v[e] = from_float<T>(rs * (wg - xh * mean));
      }
      store_pack<T, N>(dxr, j, o);
    }
  }
  if constexpr (kWeighted) {
    float* out = dw_partial + static_cast<int64_t>(blockIdx.x) * d;
    for (int j = threadIdx.x; j < packs; j += blockDim.x) {
#pragma unroll
      for (int e = 0; e < N; ++e) out[j * N + e] = dw_part[e * packs + j];
    }
  }
}

// dw[j] += sum over blocks b of partial[b, j], in a fixed order: a block of 32 x kSumRows threads
// takes 32 columns; thread row y sums b = y, y + kSumRows, ... and the kSumRows partial sums are
// then added in order of y.
constexpr int kSumRows = 32;

// static: one copy per translation unit (this header is included by rmsnorm.cu and l2norm.cu).
static __global__ void sum_dw_partials(const float* partial, int blocks, int d, float* dw) {
  __shared__ float part[kSumRows][33];
  const int j = blockIdx.x * 32 + threadIdx.x;
  float s = 0;
  if (j < d) {
    for (int b = threadIdx.y; b < blocks; b += kSumRows)
      s += partial[static_cast<int64_t>(b) * d + j];
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < d) {
    float total = 0;
    for (int y = 0; y < kSumRows; ++y) total += part[y][threadIdx.x];
    dw[j] += total;
  }
}

// Threads per row: enough for one pack each up to 512.
inline int row_block(int packs) {
  int b = 32;
  while (b < packs && b < 512) b *= 2;
  return b;
}

// Whether rows of D elements of T can move in 16-byte packs for all of these tensors.
template <typename T>
inline bool packable(int d, std::initializer_list<const Tensor*> ts) {
  if (d % kVec<T> != 0) return false;
  for (const Tensor* t : ts) {
    if (t->defined() && !aligned16(t->raw())) return false;
  }
  return true;
}

// y, rstd from x (and w when defined).
inline void forward(const Tensor& x, const Tensor& w, double eps, float div, Tensor& y,
                    Tensor& rstd) {
  const int d = static_cast<int>(x.dim(-1));
  const int64_t rows = x.numel() / d;
  if (rows == 0) return;
  OnDevice dev(x);
  const float e = static_cast<float>(eps);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel, int pack) {
      const int block = row_block(d / pack);
      const int grid = grid_for(rows * block, block, dev.index, 2048 / block);
      kernel<<<grid, block, 0, dev.stream>>>(ptr<T>(x), w.defined() ? ptr<T>(w) : nullptr, e, div,
                                             rows, d, ptr<T>(y), rstd.data<float>());
    };
    constexpr int V = kVec<T>;
    const bool vec = packable<T>(d, {&x, &w, &y});
    if (w.defined()) {
      vec ? launch(row_norm_forward_kernel<T, true, V>, V)
          : launch(row_norm_forward_kernel<T, true, 1>, 1);
    } else {
      vec ? launch(row_norm_forward_kernel<T, false, V>, V)
          : launch(row_norm_forward_kernel<T, false, 1>, 1);
    }
  });
  CUDA_CHECK_LAUNCH();
}

// dx (and dw += when w is defined) from x, rstd, dy.
inline void backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                     float div, Tensor& dx, Tensor& dw) {
  const int d = static_cast<int>(x.dim(-1));
  const int64_t rows = x.numel() / d;
  if (rows == 0) return;
  OnDevice dev(x);
  const size_t smem = w.defined() ? static_cast<size_t>(d) * sizeof(float) : 0;
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    auto launch = [&](auto kernel, int pack) {
      const int block = row_block(d / pack);
      // A full multiprocessor of threads; the [grid, D] partials cost a few % of the traffic.
      const int grid = grid_for(rows * block, block, dev.index, 2048 / block);
      Tensor partial;
      if (w.defined()) {
        partial = Tensor::empty({grid, d}, DType::kF32, x.device());
        if (smem > 48 * 1024) {
          CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(smem)));
        }
      }
      kernel<<<grid, block, smem, dev.stream>>>(
          ptr<T>(x), w.defined() ? ptr<T>(w) : nullptr, rstd.data<float>(), ptr<T>(dy), div, rows,
          d, ptr<T>(dx), w.defined() ? partial.data<float>() : nullptr);
      CUDA_CHECK_LAUNCH();
      if (w.defined()) {
        sum_dw_partials<<<(d + 31) / 32, dim3(32, kSumRows), 0, dev.stream>>>(
            partial.data<float>(), grid, d, dw.data<float>());
      }
    };
    constexpr int V = kVec<T>;
    const bool vec = packable<T>(d, {&x, &w, &dy, &dx});
    if (w.defined()) {
      vec ? launch(row_norm_backward_kernel<T, true, V>, V)
          : launch(row_norm_backward_kernel<T, true, 1>, 1);
    } else {
      vec ? launch(row_norm_backward_kernel<T, false, V>, V)
          : launch(row_norm_backward_kernel<T, false, 1>, 1);
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda::row_norm
