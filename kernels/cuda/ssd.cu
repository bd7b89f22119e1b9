// CUDA steps of Mamba2's SSD layer (kernels/ssd.h): grid-stride element loops in f32; the
// backward one warp per (row, head) over the P channels, its per-head sums over rows written per
// row in f32 and added by the deterministic row-sum kernel (kernels/cuda/column_sum.cuh).
#include "kernels/cuda/column_sum.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

struct SsdDims {
  int64_t rows, H, P;
};

SsdDims check_x_dt(const Tensor& x, const Tensor& dt, const char* op) {
  check_float(x, op, "x");
  check_like(dt, x, op, "dt", "x");
  LINEA_CHECK(x.ndim() == 4 && dt.shape() == Shape({x.dim(0), x.dim(1), x.dim(2)}))
      << op << ": x " << describe(x) << " and dt " << describe(dt)
      << " must be [B, T, H, P] and [B, T, H]";
  return {x.dim(0) * x.dim(1), x.dim(2), x.dim(3)};
}

void check_head_vector(const Tensor& t, const Tensor& x, const SsdDims& d, const char* op,
                       const char* name) {
  check_dtype(t, DType::kF32, op, name);
  check_same_device(t, x, op, name, "x");
  LINEA_CHECK(t.shape() == Shape({d.H}))
      << op << ": " << name << " " << describe(t) << " must be f32 [H] = [" << d.H << "]";
}

template <typename T>
__global__ void broadcast_kernel(const T* m, int64_t rows, int64_t H, int64_t N, T* out) {
  const int64_t n = rows * H * N, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t c = i % N, r = i / (H * N);
    out[i] = m[r * N + c];
  }
}

template <typename T>
__global__ void heads_sum_kernel(const T* d, int64_t rows, int64_t H, int64_t N, T* out) {
  const int64_t n = rows * N, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t c = i % N, r = i / N;
    float acc = 0.0f;
    for (int64_t h = 0; h < H; ++h) acc += to_float(d[(r * H + h) * N + c]);
    out[i] = from_float<T>(acc);
  }
}

template <typename T>
__global__ void discretise_kernel(const T* x, const T* dt, const float* A_log, SsdDims d, T* g,
                                  T* v) {
  const int64_t n = d.rows * d.H * d.P, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t j = i / d.P, h = j % d.H;
    const float step = to_float(dt[j]);
    v[i] = from_float<T>(to_float(x[i]) * step);
    if (i % d.P == 0) g[j] = from_float<T>(-expf(A_log[h]) * step);
  }
}

template <typename T>
__global__ void add_skip_kernel(const T* x, const float* D, SsdDims d, T* o) {
  const int64_t n = d.rows * d.H * d.P, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t h = (i / d.P) % d.H;
    o[i] = from_float<T>(to_float(o[i]) + D[h] * to_float(x[i]));
  }
}

// One warp per j = (row, head): dx, ddt, and the row's terms of dA_log (dg g) and dD (dO . x).
template <typename T>
__global__ void discretise_backward_kernel(const T* x, const T* dt, const T* g, const float* A_log,
                                           const float* D, const T* dv, const T* dg, const T* d_o,
                                           SsdDims d, T* dx, T* ddt, float* da_rows,
                                           float* dd_rows) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t j = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); j < d.rows * d.H;
       j += warps) {
    const int64_t h = j % d.H;
    const float step = to_float(dt[j]), skip = D[h];
    float acc = 0.0f, dd = 0.0f;
    for (int64_t p = lane; p < d.P; p += 32) {
      const int64_t i = j * d.P + p;
      const float dvi = to_float(dv[i]), doi = to_float(d_o[i]), xi = to_float(x[i]);
      dx[i] = from_float<T>(dvi * step + skip * doi);
      acc += dvi * xi;
      dd += doi * xi;
    }
    acc = warp_sum(acc);
    dd = warp_sum(dd);
    if (lane == 0) {
      const float dgj = to_float(dg[j]);
      ddt[j] = from_float<T>(acc - expf(A_log[h]) * dgj);
      da_rows[j] = dgj * to_float(g[j]);
      dd_rows[j] = dd;
    }
  }
}

}  // namespace

void ssd_heads_broadcast(const Tensor& m, Tensor& out) {
  const char* op = "ssd_heads_broadcast";
  check_float(m, op, "m");
  check_like(out, m, op, "out", "m");
  LINEA_CHECK(m.ndim() == 3 && out.ndim() == 4 && out.dim(0) == m.dim(0) &&
              out.dim(1) == m.dim(1) && out.dim(3) == m.dim(2))
      << op << ": m " << describe(m) << ", out " << describe(out)
      << " must be [B, T, N] and [B, T, H, N]";
  const int64_t n = out.numel();
  if (n == 0) return;
  OnDevice dev(m);
  dispatch(m.dtype(), [&](auto tag) {
    using T = decltype(tag);
    broadcast_kernel<T><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(m), m.dim(0) * m.dim(1), out.dim(2), m.dim(2), ptr<T>(out));
  });
  CUDA_CHECK_LAUNCH();
}

void ssd_heads_sum(const Tensor& d, Tensor& out) {
  const char* op = "ssd_heads_sum";
  check_float(d, op, "d");
  check_like(out, d, op, "out", "d");
  LINEA_CHECK(d.ndim() == 4 && out.shape() == Shape({d.dim(0), d.dim(1), d.dim(3)}))
      << op << ": d " << describe(d) << ", out " << describe(out)
      << " must be [B, T, H, N] and [B, T, N]";
  const int64_t n = out.numel();
  if (n == 0) return;
  OnDevice dev(d);
  dispatch(d.dtype(), [&](auto tag) {
    using T = decltype(tag);
    heads_sum_kernel<T><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(d), d.dim(0) * d.dim(1), d.dim(2), d.dim(3), ptr<T>(out));
  });
  CUDA_CHECK_LAUNCH();
}

void ssd_discretise(const Tensor& x, const Tensor& dt, const Tensor& A_log, Tensor& g, Tensor& v) {
  const char* op = "ssd_discretise";
  const SsdDims s = check_x_dt(x, dt, op);
  check_head_vector(A_log, x, s, op, "A_log");
  check_same_shape(g, dt, op, "g", "dt");
  check_same_shape(v, x, op, "v", "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    discretise_kernel<T><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(x), ptr<T>(dt), A_log.data<float>(), s, ptr<T>(g), ptr<T>(v));
  });
  CUDA_CHECK_LAUNCH();
}

void ssd_add_skip(const Tensor& x, const Tensor& D, Tensor& o) {
  const char* op = "ssd_add_skip";
  check_float(x, op, "x");
  LINEA_CHECK(x.ndim() == 4) << op << ": x " << describe(x) << " must be [B, T, H, P]";
  const SsdDims s{x.dim(0) * x.dim(1), x.dim(2), x.dim(3)};
  check_head_vector(D, x, s, op, "D");
  check_same_shape(o, x, op, "o", "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    add_skip_kernel<T><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(x), D.data<float>(), s, ptr<T>(o));
  });
  CUDA_CHECK_LAUNCH();
}

void ssd_discretise_backward(const Tensor& x, const Tensor& dt, const Tensor& g,
                             const Tensor& A_log, const Tensor& D, const Tensor& dv,
                             const Tensor& dg, const Tensor& d_o, Tensor& dx, Tensor& ddt,
                             Tensor& dA_log, Tensor& dD) {
  const char* op = "ssd_discretise_backward";
  const SsdDims s = check_x_dt(x, dt, op);
  check_head_vector(A_log, x, s, op, "A_log");
  check_head_vector(D, x, s, op, "D");
  check_head_vector(dA_log, x, s, op, "dA_log");
  check_head_vector(dD, x, s, op, "dD");
  check_same_shape(g, dt, op, "g", "dt");
  check_same_shape(dg, dt, op, "dg", "dt");
  check_same_shape(ddt, dt, op, "ddt", "dt");
  check_same_shape(dv, x, op, "dv", "x");
  check_same_shape(d_o, x, op, "d_o", "x");
  check_same_shape(dx, x, op, "dx", "x");
  const int64_t jobs = s.rows * s.H;
  if (jobs == 0) return;
  OnDevice dev(x);
  Tensor da_rows = Tensor::empty({s.rows, s.H}, DType::kF32, x.device());
  Tensor dd_rows = Tensor::empty({s.rows, s.H}, DType::kF32, x.device());
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int block = 256, grid = grid_for(jobs * 32, block, dev.index);
    discretise_backward_kernel<T><<<grid, block, 0, dev.stream>>>(
        ptr<T>(x), ptr<T>(dt), ptr<T>(g), A_log.data<float>(), D.data<float>(), ptr<T>(dv),
        ptr<T>(dg), ptr<T>(d_o), s, ptr<T>(dx), ptr<T>(ddt), da_rows.data<float>(),
        dd_rows.data<float>());
  });
  CUDA_CHECK_LAUNCH();
  column_sums<float>(da_rows.data<float>(), 1, s.rows, static_cast<int>(s.H), dA_log.data<float>(),
                     true, dev);
  column_sums<float>(dd_rows.data<float>(), 1, s.rows, static_cast<int>(s.H), dD.data<float>(),
                     true, dev);
}

}  // namespace linea::kernels::cuda
