// CUDA short causal depthwise convolution (kernels/short_conv.h): one thread per output element
// for y and dx (the K taps in registers, f32 arithmetic), the SiLU's pre-activation recomputed in
// the backward; dw sums g x over every (b, t) per (channel, tap): blocks of 32 channels x 8 row
// phases over splits of the rows in f64, the splits added in a fixed order (deterministic).
// x, w, dy, dx of one dtype (f32 or bf16); dw f32 or that dtype; K <= kMaxTaps.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/row_partials.cuh"

namespace linea::kernels::cuda {
namespace {

constexpr int kMaxTaps = 8;

struct ConvDims {
  int64_t B, L, C;
  int K;
};

ConvDims check_conv(const Tensor& x, const Tensor& w, const char* op) {
  check_float(x, op, "x");
  check_like(w, x, op, "w", "x");
  LINEA_CHECK(x.ndim() == 3 && w.ndim() == 2 && w.dim(0) == x.dim(2))
      << op << ": x " << describe(x) << ", w " << describe(w)
      << " (expected x [B, T, C], w [C, K])";
  LINEA_CHECK(w.dim(1) >= 1 && w.dim(1) <= kMaxTaps)
      << op << ": kernel size K = " << w.dim(1) << " (w " << describe(w)
      << "); the CUDA path takes "
      << "1 <= K <= " << kMaxTaps;
  return {x.dim(0), x.dim(1), x.dim(2), static_cast<int>(w.dim(1))};
}

// The pre-activation at (bt, c): sum_j w[c, j] x[b, t - K + 1 + j, c] over the taps inside the
// sequence.
template <typename T>
__device__ __forceinline__ float conv_at(const T* x, const T* w, int64_t bt, int64_t t, int64_t C,
                                         int64_t c, int K) {
  float acc = 0.0f;
  for (int j = 0; j < K; ++j) {
    const int64_t back = K - 1 - j;
    if (t >= back) acc += to_float(w[c * K + j]) * to_float(x[(bt - back) * C + c]);
  }
  return acc;
}

template <typename T>
__global__ void conv_forward_kernel(const T* x, const T* w, ConvDims d, bool silu, T* y) {
  const int64_t n = d.B * d.L * d.C, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t c = i % d.C, bt = i / d.C, t = bt % d.L;
    const float a = conv_at(x, w, bt, t, d.C, c, d.K);
    y[i] = from_float<T>(silu ? a / (1.0f + expf(-a)) : a);
  }
}

// g = dy * silu'(a) (or dy), f32.
template <typename T>
__global__ void conv_grad_kernel(const T* x, const T* w, const T* dy, ConvDims d, bool silu,
                                 float* g) {
  const int64_t n = d.B * d.L * d.C, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    float v = to_float(dy[i]);
    if (silu) {
      const int64_t c = i % d.C, bt = i / d.C, t = bt % d.L;
      const float a = conv_at(x, w, bt, t, d.C, c, d.K);
      const float s = 1.0f / (1.0f + expf(-a));
      v *= s * (1.0f + a * (1.0f - s));
    }
    g[i] = v;
  }
}

// dx[b, s, c] = sum_j g[b, s + K - 1 - j, c] w[c, j] over the outputs inside the sequence.
template <typename T>
__global__ void conv_dx_kernel(const float* g, const T* w, ConvDims d, T* dx) {
  const int64_t n = d.B * d.L * d.C, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t c = i % d.C, bs = i / d.C, s = bs % d.L;
    float acc = 0.0f;
    for (int j = 0; j < d.K; ++j) {
      const int64_t ahead = d.K - 1 - j;
      if (s + ahead < d.L) acc += g[(bs + ahead) * d.C + c] * to_float(w[c * d.K + j]);
    }
    dx[i] = from_float<T>(acc);
  }
}

constexpr int kTile = 32, kPhases = 8;

// partial[split, c * K + j] = sum over the split's rows r = (b, t) of g[r, c] x[r - K + 1 + j, c].
template <typename T>
__global__ void conv_dw_partial_kernel(const float* g, const T* x, ConvDims d,
                                       int64_t rows_per_split, double* partial) {
  __shared__ double part[kPhases][kTile][kMaxTaps + 1];
  const int64_t c = blockIdx.x * int64_t(kTile) + threadIdx.x;
  const int64_t R = d.B * d.L, r0 = blockIdx.y * rows_per_split;
  const int64_t r1 = r0 + rows_per_split < R ? r0 + rows_per_split : R;
  double acc[kMaxTaps];
#pragma unroll
  for (int j = 0; j < kMaxTaps; ++j) acc[j] = 0;
  if (c < d.C) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kPhases) {
      const double gv = g[r * d.C + c];
      const int64_t t = r % d.L;
#pragma unroll
      for (int j = 0; j < kMaxTaps; ++j) {
        const int64_t back = d.K - 1 - j;
        if (j < d.K && t >= back) acc[j] += gv * double(to_float(x[(r - back) * d.C + c]));
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxTaps; ++j) part[threadIdx.y][threadIdx.x][j] = acc[j];
  __syncthreads();
  if (threadIdx.y == 0 && c < d.C) {
    const int64_t n = d.C * d.K;
    for (int j = 0; j < d.K; ++j) {
      double s = 0;
#pragma unroll
      for (int p = 0; p < kPhases; ++p) s += part[p][threadIdx.x][j];
      partial[blockIdx.y * n + c * d.K + j] = s;
    }
  }
}

}  // namespace

void short_conv_forward(const Tensor& x, const Tensor& w, bool silu, Tensor& y) {
  const char* op = "short_conv_forward";
  const ConvDims d = check_conv(x, w, op);
  check_same_shape(y, x, op, "y", "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    conv_forward_kernel<T><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(x), ptr<T>(w), d, silu, ptr<T>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void short_conv_backward(const Tensor& x, const Tensor& w, bool silu, const Tensor& dy, Tensor& dx,
                         Tensor& dw) {
  const char* op = "short_conv_backward";
  const ConvDims d = check_conv(x, w, op);
  check_same_shape(dy, x, op, "dy", "x");
  check_same_shape(dx, x, op, "dx", "x");
  check_float(dw, op, "dw");
  check_same_device(dw, x, op, "dw", "x");
  LINEA_CHECK(dw.shape() == w.shape() && (dw.dtype() == DType::kF32 || dw.dtype() == w.dtype()))
      << op << ": dw " << describe(dw) << " must be " << shape_str(w.shape())
      << " in f32 or the dtype of w " << describe(w);
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  Tensor g = Tensor::empty(x.shape(), DType::kF32, x.device());
  const int64_t R = d.B * d.L;
  const int64_t tiles = (d.C + kTile - 1) / kTile;
  const int splits = row_splits(R, tiles, dev.index);
  const int64_t rows_per_split = (R + splits - 1) / splits;
  Tensor partial = Tensor::empty({int64_t(splits) * d.C * d.K}, DType::kF64, x.device());
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int grid = grid_for(n, 256, dev.index);
    conv_grad_kernel<T>
        <<<grid, 256, 0, dev.stream>>>(ptr<T>(x), ptr<T>(w), ptr<T>(dy), d, silu, g.data<float>());
    CUDA_CHECK_LAUNCH();
    conv_dx_kernel<T><<<grid, 256, 0, dev.stream>>>(g.data<float>(), ptr<T>(w), d, ptr<T>(dx));
    CUDA_CHECK_LAUNCH();
    conv_dw_partial_kernel<T>
        <<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits)), dim3(kTile, kPhases),
           0, dev.stream>>>(g.data<float>(), ptr<T>(x), d, rows_per_split, partial.data<double>());
    CUDA_CHECK_LAUNCH();
  });
  add_partials(partial, splits, d.C * d.K, dw, dev);
}

}  // namespace linea::kernels::cuda
