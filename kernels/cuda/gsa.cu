// CUDA steps of Gated Slot Attention (kernels/gsa.h): the slot write weight element-wise in f32,
// the softmax over the M slots one warp per row (max and sum by shuffles), f32 arithmetic.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

template <typename T>
__global__ void slot_write_kernel(const T* la, int64_t n, T* w) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride)
    w[i] = from_float<T>(-expm1f(to_float(la[i])));
}

template <typename T>
__global__ void slot_write_backward_kernel(const T* la, const T* dla, const T* dw, int64_t n,
                                           T* out) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride)
    out[i] = from_float<T>(to_float(dla[i]) - expf(to_float(la[i])) * to_float(dw[i]));
}

template <typename T>
__global__ void slot_softmax_kernel(const T* s, int64_t rows, int64_t M, T* p) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
       r += warps) {
    const T* sr = s + r * M;
    float mx = -INFINITY;
    for (int64_t j = lane; j < M; j += 32) mx = fmaxf(mx, to_float(sr[j]));
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float z = 0.0f;
    for (int64_t j = lane; j < M; j += 32) z += expf(to_float(sr[j]) - mx);
    z = warp_sum(z);
    const float inv = 1.0f / z;
    for (int64_t j = lane; j < M; j += 32)
      p[r * M + j] = from_float<T>(expf(to_float(sr[j]) - mx) * inv);
  }
}

template <typename T>
__global__ void slot_softmax_backward_kernel(const T* p, const T* dp, int64_t rows, int64_t M,
                                             T* ds) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
       r += warps) {
    float dot = 0.0f;
    for (int64_t j = lane; j < M; j += 32) dot += to_float(p[r * M + j]) * to_float(dp[r * M + j]);
    dot = warp_sum(dot);
    for (int64_t j = lane; j < M; j += 32) {
      const int64_t i = r * M + j;
      ds[i] = from_float<T>(to_float(p[i]) * (to_float(dp[i]) - dot));
    }
  }
}

void check_rows(const Tensor& x, const char* op, const char* name) {
  check_float(x, op, name);
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0)
      << op << ": " << name << " " << describe(x) << " needs a last dimension M > 0";
}

}  // namespace

void gsa_slot_write_forward(const Tensor& log_alpha, Tensor& w) {
  const char* op = "gsa_slot_write_forward";
  check_float(log_alpha, op, "log_alpha");
  check_same_shape(w, log_alpha, op, "w", "log_alpha");
  const int64_t n = w.numel();
  if (n == 0) return;
  OnDevice dev(log_alpha);
  dispatch(w.dtype(), [&](auto tag) {
    using T = decltype(tag);
    slot_write_kernel<T>
        <<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(ptr<T>(log_alpha), n, ptr<T>(w));
  });
  CUDA_CHECK_LAUNCH();
}

void gsa_slot_write_backward(const Tensor& log_alpha, const Tensor& d_log_alpha, const Tensor& d_w,
                             Tensor& d_total) {
  const char* op = "gsa_slot_write_backward";
  check_float(log_alpha, op, "log_alpha");
  check_same_shape(d_log_alpha, log_alpha, op, "d_log_alpha", "log_alpha");
  check_same_shape(d_w, log_alpha, op, "d_w", "log_alpha");
  check_same_shape(d_total, log_alpha, op, "d_total", "log_alpha");
  const int64_t n = d_total.numel();
  if (n == 0) return;
  OnDevice dev(log_alpha);
  dispatch(d_total.dtype(), [&](auto tag) {
    using T = decltype(tag);
    slot_write_backward_kernel<T><<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(log_alpha), ptr<T>(d_log_alpha), ptr<T>(d_w), n, ptr<T>(d_total));
  });
  CUDA_CHECK_LAUNCH();
}

void gsa_slot_softmax_forward(const Tensor& s, Tensor& p) {
  const char* op = "gsa_slot_softmax_forward";
  check_rows(s, op, "s");
  check_same_shape(p, s, op, "p", "s");
  const int64_t M = s.dim(-1), rows = s.numel() / M;
  if (rows == 0) return;
  OnDevice dev(s);
  dispatch(s.dtype(), [&](auto tag) {
    using T = decltype(tag);
    slot_softmax_kernel<T><<<grid_for(rows * 32, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(s), rows, M, ptr<T>(p));
  });
  CUDA_CHECK_LAUNCH();
}

void gsa_slot_softmax_backward(const Tensor& p, const Tensor& dp, Tensor& ds) {
  const char* op = "gsa_slot_softmax_backward";
  check_rows(p, op, "p");
  check_same_shape(dp, p, op, "dp", "p");
  check_same_shape(ds, p, op, "ds", "p");
  const int64_t M = p.dim(-1), rows = p.numel() / M;
  if (rows == 0) return;
  OnDevice dev(p);
  dispatch(p.dtype(), [&](auto tag) {
    using T = decltype(tag);
    slot_softmax_backward_kernel<T><<<grid_for(rows * 32, 256, dev.index), 256, 0, dev.stream>>>(
        ptr<T>(p), ptr<T>(dp), rows, M, ptr<T>(ds));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
