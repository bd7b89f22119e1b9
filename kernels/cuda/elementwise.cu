// CUDA element-wise helpers (kernels/elementwise.h), in f32 arithmetic. sum_squares is a two-pass
// reduction with f64 partial sums per thread (as the CPU sums in f64) and a fixed order, so it is
// deterministic; it and all_finite wait for their one value.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kReduceBlocks = 1024;

#define LINEA_GRID_STRIDE(i, n)                                             \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

// Element-wise kernels over 16-byte packs of N elements (N = 1 where a tensor is not aligned),
// then the tail element by element.
#define LINEA_PACKS(j, i, n, N)                                                \
  const int64_t packs_ = (n) / (N), stride_ = int64_t(gridDim.x) * blockDim.x; \
  const int64_t first_ = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;       \
  for (int64_t j = first_; j < packs_; j += stride_)

#define LINEA_TAIL(i, n, N) for (int64_t i = packs_ * (N) + first_; i < (n); i += stride_)

template <typename T, int N>
__global__ void add_kernel(const T* a, const T* b, int64_t n, T* out) {
  LINEA_PACKS(j, i, n, N) {
    const Pack<T, N> x = load_pack<T, N>(a, j), y = load_pack<T, N>(b, j);
    Pack<T, N> o;
#pragma unroll
    for (int e = 0; e < N; ++e) o.v[e] = from_float<T>(to_float(x.v[e]) + to_float(y.v[e]));
    store_pack<T, N>(out, j, o);
  }
  LINEA_TAIL(i, n, N) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

template <typename T, int N>
__global__ void axpy_kernel(float alpha, const T* x, int64_t n, T* y) {
  LINEA_PACKS(j, i, n, N) {
    const Pack<T, N> a = load_pack<T, N>(x, j);
    Pack<T, N> b = load_pack<T, N>(y, j);
#pragma unroll
    for (int e = 0; e < N; ++e) b.v[e] = from_float<T>(to_float(b.v[e]) + alpha * to_float(a.v[e]));
    store_pack<T, N>(y, j, b);
  }
  LINEA_TAIL(i, n, N) y[i] = from_float<T>(to_float(y[i]) + alpha * to_float(x[i]));
}

template <typename T, int N>
__global__ void scale_kernel(T* x, int64_t n, float alpha) {
  LINEA_PACKS(j, i, n, N) {
    Pack<T, N> a = load_pack<T, N>(x, j);
#pragma unroll
    for (int e = 0; e < N; ++e) a.v[e] = from_float<T>(to_float(a.v[e]) * alpha);
    store_pack<T, N>(x, j, a);
  }
  LINEA_TAIL(i, n, N) x[i] = from_float<T>(to_float(x[i]) * alpha);
}

#undef LINEA_PACKS
#undef LINEA_TAIL

// Launches kernel<T, kVec<T>> when every pointer is 16-byte aligned, else kernel<T, 1>.
template <typename T, typename Launch>
void packed_launch(std::initializer_list<const Tensor*> ts, int64_t n, const OnDevice& dev,
                   Launch&& launch) {
  bool vec = true;
  for (const Tensor* t : ts) vec = vec && aligned16(t->raw());
  constexpr int V = kVec<T>;
  const int grid = grid_for(vec ? (n + V - 1) / V : n, kBlock, dev.index);
  if (vec) {
    launch(std::integral_constant<int, V>{}, grid);
  } else {
    launch(std::integral_constant<int, 1>{}, grid);
  }
}

template <typename T>
__global__ void sum_squares_partial(const T* x, int64_t n, double* partial) {
  __shared__ double scratch[32];
  double s = 0;
  LINEA_GRID_STRIDE(i, n) {
    const double v = to_float(x[i]);
    s += v * v;
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials(const double* partial, int count, double* out) {
  __shared__ double scratch[32];
  double s = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) *out = s;
}

template <typename T>
__global__ void find_non_finite(const T* x, int64_t n, int* flag) {
  LINEA_GRID_STRIDE(i, n) {
    if (!isfinite(to_float(x[i]))) *flag = 1;
  }
}

#undef LINEA_GRID_STRIDE

template <typename T>
T read_back(const Tensor& buf, const OnDevice& dev) {
  T host;
  CUDA_CHECK(cudaMemcpyAsync(&host, buf.raw(), sizeof(T), cudaMemcpyDeviceToHost, dev.stream));
  CUDA_CHECK(cudaStreamSynchronize(dev.stream));
  return host;
}

}  // namespace

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = "add";
  check_float(a, op, "a");
  check_same_shape(b, a, op, "b", "a");
  check_same_shape(out, a, op, "out", "a");
  const int64_t n = a.numel();
  if (n == 0) return;
  OnDevice dev(a);
  dispatch(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    packed_launch<T>({&a, &b, &out}, n, dev, [&](auto pack, int grid) {
      add_kernel<T, decltype(pack)::value>
          <<<grid, kBlock, 0, dev.stream>>>(ptr<T>(a), ptr<T>(b), n, ptr<T>(out));
    });
  });
  CUDA_CHECK_LAUNCH();
}

void add_inplace(Tensor& a, const Tensor& b) {
  check_float(a, "add_inplace", "a");
  check_same_shape(b, a, "add_inplace", "b", "a");
  add(a, b, a);
}

void axpy(double alpha, const Tensor& x, Tensor& y) {
  const char* op = "axpy";
  check_float(x, op, "x");
  check_same_shape(y, x, op, "y", "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    packed_launch<T>({&x, &y}, n, dev, [&](auto pack, int grid) {
      axpy_kernel<T, decltype(pack)::value>
          <<<grid, kBlock, 0, dev.stream>>>(static_cast<float>(alpha), ptr<T>(x), n, ptr<T>(y));
    });
  });
  CUDA_CHECK_LAUNCH();
}

void scale(Tensor& x, double alpha) {
  check_float(x, "scale", "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    packed_launch<T>({&x}, n, dev, [&](auto pack, int grid) {
      scale_kernel<T, decltype(pack)::value>
          <<<grid, kBlock, 0, dev.stream>>>(ptr<T>(x), n, static_cast<float>(alpha));
    });
  });
  CUDA_CHECK_LAUNCH();
}

namespace {
// The two passes into *out (a device f64), queued on the current stream; no wait.
void queue_sum_squares(const Tensor& x, const OnDevice& dev, double* out) {
  const int blocks = grid_for(x.numel(), kBlock, dev.index, 8) < kReduceBlocks
                         ? grid_for(x.numel(), kBlock, dev.index, 8)
                         : kReduceBlocks;
  Tensor partial = Tensor::empty({blocks}, DType::kF64, x.device());
  double* p = partial.data<double>();
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    sum_squares_partial<<<blocks, kBlock, 0, dev.stream>>>(ptr<T>(x), x.numel(), p);
  });
  CUDA_CHECK_LAUNCH();
  sum_partials<<<1, 1024, 0, dev.stream>>>(p, blocks, out);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

double sum_squares(const Tensor& x) {
  check_float(x, "sum_squares", "x");
  if (x.numel() == 0) return 0.0;
  OnDevice dev(x);
  Tensor out = Tensor::empty({1}, DType::kF64, x.device());
  queue_sum_squares(x, dev, out.data<double>());
  return read_back<double>(out, dev);
}

void sum_squares_into(const Tensor& x, Tensor& sums, int64_t index) {
  check_float(x, "sum_squares_into", "x");
  LINEA_CHECK(sums.defined() && sums.dtype() == DType::kF64 && sums.device() == x.device() &&
              index >= 0 && index < sums.numel())
      << "sum_squares_into: sums must be an f64 tensor on " << x.device().str() << " with an entry "
      << index;
  OnDevice dev(x);
  if (x.numel() == 0) {
    CUDA_CHECK(cudaMemsetAsync(sums.data<double>() + index, 0, sizeof(double), dev.stream));
    return;
  }
  queue_sum_squares(x, dev, sums.data<double>() + index);
}

bool all_finite(const Tensor& x) {
  check_float(x, "all_finite", "x");
  if (x.numel() == 0) return true;
  OnDevice dev(x);
  Tensor flag = Tensor::zeros({1}, DType::kI32, x.device());
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    find_non_finite<<<grid_for(x.numel(), kBlock, dev.index), kBlock, 0, dev.stream>>>(
        ptr<T>(x), x.numel(), flag.data<int32_t>());
  });
  CUDA_CHECK_LAUNCH();
  return read_back<int32_t>(flag, dev) == 0;
}

}  // namespace linea::kernels::cuda
