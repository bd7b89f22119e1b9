// CUDA degree-2 feature maps (kernels/quadratic_feature_map.h): one thread per output feature in
// the forward, one per input feature in the backward (its row of d products), f32 arithmetic.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

struct QuadArgs {
  int64_t rows;
  int d, width;
  bool constant, linear;
  float c1, c2;
};

template <typename T>
__global__ void quadratic_forward_kernel(const T* x, QuadArgs a, T* y) {
  const int64_t n = a.rows * a.width, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    const int64_t r = i / a.width;
    int o = static_cast<int>(i % a.width);
    const T* xr = x + r * a.d;
    float v;
    if (a.constant && o == 0) {
      v = 1.0f;
    } else {
      if (a.constant) --o;
      if (a.linear && o < a.d) {
        v = a.c1 * to_float(xr[o]);
      } else {
        if (a.linear) o -= a.d;
        v = a.c2 * to_float(xr[o / a.d]) * to_float(xr[o % a.d]);
      }
    }
    y[i] = from_float<T>(v);
  }
}

template <typename T>
__global__ void quadratic_backward_kernel(const T* x, const T* dy, QuadArgs a, T* dx) {
  const int64_t n = a.rows * a.d, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n; e += stride) {
    const int64_t r = e / a.d;
    const int i = static_cast<int>(e % a.d);
    const T* xr = x + r * a.d;
    const T* dyr = dy + r * a.width + (a.constant ? 1 : 0);
    const T* quad = dyr + (a.linear ? a.d : 0);
    float s = 0.0f;
    for (int j = 0; j < a.d; ++j)
      s += (to_float(quad[i * a.d + j]) + to_float(quad[j * a.d + i])) * to_float(xr[j]);
    float g = a.c2 * s;
    if (a.linear) g += a.c1 * to_float(dyr[i]);
    dx[e] = from_float<T>(g);
  }
}

QuadArgs check_quad(const QuadraticFeatureMap& f, const Tensor& x, const Tensor& out,
                    const char* op, const char* name) {
  check_float(x, op, "x");
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0 && x.dim(-1) <= 4096)
      << op << ": x " << describe(x) << " needs a last dimension 0 < d <= 4096";
  check_like(out, x, op, name, "x");
  Shape want = x.shape();
  want.back() = quadratic_feature_dim(f, x.dim(-1));
  LINEA_CHECK(out.shape() == want)
      << op << ": " << name << " " << describe(out) << " must be " << shape_str(want);
  const int d = static_cast<int>(x.dim(-1));
  return {x.numel() / d,
          d,
          static_cast<int>(want.back()),
          f.constant,
          f.linear != 0,
          static_cast<float>(f.linear),
          static_cast<float>(f.quadratic)};
}

}  // namespace

void quadratic_feature_map_forward(const QuadraticFeatureMap& f, const Tensor& x, Tensor& y) {
  const QuadArgs a = check_quad(f, x, y, "quadratic_feature_map_forward", "y");
  const int64_t n = y.numel();
  if (n == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    quadratic_forward_kernel<T>
        <<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(ptr<T>(x), a, ptr<T>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void quadratic_feature_map_backward(const QuadraticFeatureMap& f, const Tensor& x, const Tensor& dy,
                                    Tensor& dx) {
  const char* op = "quadratic_feature_map_backward";
  const QuadArgs a = check_quad(f, x, dy, op, "dy");
  check_same_shape(dx, x, op, "dx", "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  OnDevice dev(x);
  dispatch(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    quadratic_backward_kernel<T>
        <<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(ptr<T>(x), ptr<T>(dy), a, ptr<T>(dx));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
