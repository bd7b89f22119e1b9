// CUDA Hedgehog feature map (kernels/hedgehog_feature_map.h), f32 arithmetic. Forward: one block
// per (row, head), the row of x in shared memory, each thread a few of the f logits z = x W_h,
// then both softmaxes from a block max / min and two block sums. Backward: the same layout for
// dz (kept in an f32 buffer) and dx = dz W_h^T; then dW_h = sum_rows x^T dz, one thread per
// element of W over splits of the rows in f64, the splits added in a fixed order (deterministic).
// x, w, y, dy, dx of one dtype (f32 or bf16); dw f32 or that dtype.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/row_partials.cuh"

namespace linea::kernels::cuda {
namespace {

constexpr int kBlock = 128;

struct HhDims {
  int64_t rows;  // rows of x per head: x.numel() / (H d)
  int H, d, f;
};

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = lane < warps ? scratch[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}

template <typename T>
__global__ void hedgehog_forward_kernel(const T* x, const T* w, HhDims s, T* y) {
  extern __shared__ float sh[];
  float* xs = sh;       // [d]
  float* z = sh + s.d;  // [f]
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < s.rows * s.H; row += gridDim.x) {
    const int h = static_cast<int>(row % s.H);
    __syncthreads();
    for (int i = threadIdx.x; i < s.d; i += blockDim.x) xs[i] = to_float(x[row * s.d + i]);
    __syncthreads();
    const T* wh = w + int64_t(h) * s.d * s.f;
    float mx = -INFINITY, mn = INFINITY;
    for (int j = threadIdx.x; j < s.f; j += blockDim.x) {
      float acc = 0.0f;
      for (int i = 0; i < s.d; ++i) acc += xs[i] * to_float(wh[int64_t(i) * s.f + j]);
      z[j] = acc;
      mx = fmaxf(mx, acc);
      mn = fminf(mn, acc);
    }
    mx = block_max(mx, scratch);
    mn = -block_max(-mn, scratch);
    float sp = 0.0f, sn = 0.0f;
    for (int j = threadIdx.x; j < s.f; j += blockDim.x) {
      sp += expf(z[j] - mx);
      sn += expf(mn - z[j]);
    }
    sp = block_sum(sp, scratch);
    sn = block_sum(sn, scratch);
    T* yr = y + row * 2 * s.f;
    for (int j = threadIdx.x; j < s.f; j += blockDim.x) {
      yr[j] = from_float<T>(expf(z[j] - mx) / sp);
      yr[s.f + j] = from_float<T>(expf(mn - z[j]) / sn);
    }
  }
}

template <typename T>
__global__ void hedgehog_backward_kernel(const T* w, const T* y, const T* dy, HhDims s, T* dx,
                                         float* dz_out) {
  extern __shared__ float dz[];  // [f]
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < s.rows * s.H; row += gridDim.x) {
    const int h = static_cast<int>(row % s.H);
    const T *p = y + row * 2 * s.f, *n = p + s.f, *dp = dy + row * 2 * s.f, *dn = dp + s.f;
    float pdp = 0.0f, ndn = 0.0f;
    for (int j = threadIdx.x; j < s.f; j += blockDim.x) {
      pdp += to_float(p[j]) * to_float(dp[j]);
      ndn += to_float(n[j]) * to_float(dn[j]);
    }
    pdp = block_sum(pdp, scratch);
    ndn = block_sum(ndn, scratch);
    for (int j = threadIdx.x; j < s.f; j += blockDim.x) {
      const float g =
          to_float(p[j]) * (to_float(dp[j]) - pdp) - to_float(n[j]) * (to_float(dn[j]) - ndn);
      dz[j] = g;
      dz_out[row * s.f + j] = g;
    }
    __syncthreads();
    const T* wh = w + int64_t(h) * s.d * s.f;
    for (int i = threadIdx.x; i < s.d; i += blockDim.x) {
      float acc = 0.0f;
      for (int j = 0; j < s.f; ++j) acc += dz[j] * to_float(wh[int64_t(i) * s.f + j]);
      dx[row * s.d + i] = from_float<T>(acc);
    }
    __syncthreads();
  }
}

// partial[split, (h, i, j)] = sum over the split's rows r of x[r, h, i] dz[r, h, j].
template <typename T>
__global__ void hedgehog_dw_partial_kernel(const T* x, const float* dz, HhDims s,
                                           int64_t rows_per_split, double* partial) {
  const int64_t n = int64_t(s.H) * s.d * s.f;
  const int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (e >= n) return;
  const int j = static_cast<int>(e % s.f);
  const int i = static_cast<int>((e / s.f) % s.d);
  const int h = static_cast<int>(e / (int64_t(s.f) * s.d));
  const int64_t r0 = blockIdx.y * rows_per_split;
  const int64_t r1 = r0 + rows_per_split < s.rows ? r0 + rows_per_split : s.rows;
  double acc = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t row = r * s.H + h;
    acc += double(to_float(x[row * s.d + i])) * dz[row * s.f + j];
  }
  partial[blockIdx.y * n + e] = acc;
}

HhDims check_xw(const Tensor& x, const Tensor& w, const char* op) {
  check_float(x, op, "x");
  check_like(w, x, op, "w", "x");
  LINEA_CHECK(x.ndim() >= 2 && w.ndim() == 3 && w.dim(0) == x.dim(-2) && w.dim(1) == x.dim(-1))
      << op << ": x " << describe(x) << " must be [..., H, d] and w " << describe(w)
      << " [H, d, f]";
  const int64_t H = w.dim(0), d = w.dim(1), f = w.dim(2);
  LINEA_CHECK(d > 0 && f > 0 && d + f <= 8192)
      << op << ": w " << describe(w) << " needs 0 < d, f and d + f <= 8192 on CUDA";
  return {x.numel() / (H * d), static_cast<int>(H), static_cast<int>(d), static_cast<int>(f)};
}

void check_y(const Tensor& y, const Tensor& x, const HhDims& s, const char* op, const char* name) {
  check_like(y, x, op, name, "x");
  Shape want = x.shape();
  want.back() = 2 * s.f;
  LINEA_CHECK(y.shape() == want) << op << ": " << name << " " << describe(y) << " must be "
                                 << shape_str(want);
}

int row_grid(int64_t jobs, int device) {
  const int64_t cap = int64_t(multiprocessors(device)) * 16;
  return static_cast<int>(jobs < 1 ? 1 : (jobs < cap ? jobs : cap));
}

}  // namespace

void hedgehog_feature_map_forward(const Tensor& x, const Tensor& w, Tensor& y) {
  const char* op = "hedgehog_feature_map_forward";
  const HhDims s = check_xw(x, w, op);
  check_y(y, x, s, op, "y");
  const int64_t jobs = s.rows * s.H;
  if (jobs == 0) return;
  OnDevice dev(x);
  const size_t shared = sizeof(float) * (s.d + s.f);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    hedgehog_forward_kernel<T><<<row_grid(jobs, dev.index), kBlock, shared, dev.stream>>>(
        ptr<T>(x), ptr<T>(w), s, ptr<T>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void hedgehog_feature_map_backward(const Tensor& x, const Tensor& w, const Tensor& y,
                                   const Tensor& dy, Tensor& dx, Tensor& dw) {
  const char* op = "hedgehog_feature_map_backward";
  const HhDims s = check_xw(x, w, op);
  check_y(y, x, s, op, "y");
  check_y(dy, x, s, op, "dy");
  check_same_shape(dx, x, op, "dx", "x");
  check_float(dw, op, "dw");
  check_same_device(dw, x, op, "dw", "x");
  LINEA_CHECK(dw.shape() == w.shape() && (dw.dtype() == DType::kF32 || dw.dtype() == w.dtype()))
      << op << ": dw " << describe(dw) << " must be " << shape_str(w.shape())
      << " in f32 or the dtype of w " << describe(w);
  const int64_t jobs = s.rows * s.H;
  if (jobs == 0) return;
  OnDevice dev(x);
  Tensor dz = Tensor::empty({jobs, s.f}, DType::kF32, x.device());
  const int64_t n = int64_t(s.H) * s.d * s.f;
  const int64_t tiles = (n + 255) / 256;
  const int splits = row_splits(s.rows, tiles, dev.index, 64);
  const int64_t rows_per_split = (s.rows + splits - 1) / splits;
  Tensor partial = Tensor::empty({int64_t(splits) * n}, DType::kF64, x.device());
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    hedgehog_backward_kernel<T>
        <<<row_grid(jobs, dev.index), kBlock, sizeof(float) * s.f, dev.stream>>>(
            ptr<T>(w), ptr<T>(y), ptr<T>(dy), s, ptr<T>(dx), dz.data<float>());
    CUDA_CHECK_LAUNCH();
    hedgehog_dw_partial_kernel<T>
        <<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits)), 256, 0, dev.stream>>>(
            ptr<T>(x), dz.data<float>(), s, rows_per_split, partial.data<double>());
    CUDA_CHECK_LAUNCH();
  });
  add_partials(partial, splits, n, dw, dev);
}

}  // namespace linea::kernels::cuda
