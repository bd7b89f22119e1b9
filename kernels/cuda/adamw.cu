// CUDA AdamW (kernels/adamw.h): one fused pass over p, g, m, v in f32 arithmetic, grid-stride.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

struct Coeffs {
  float lr, b1, b2, one_minus_b1, one_minus_b2, eps, wd, inv_bc1, inv_bc2;
};

template <typename G>
__global__ void adamw_kernel(float* p, const G* g, float* m, float* v, int64_t n, Coeffs c) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = to_float(g[i]);
    const float mi = c.b1 * m[i] + c.one_minus_b1 * gi;
    const float vi = c.b2 * v[i] + c.one_minus_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i];
    const float update = (mi * c.inv_bc1) / (sqrtf(vi * c.inv_bc2) + c.eps) + c.wd * pi;
    p[i] = pi - c.lr * update;
  }
}

}  // namespace

void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& s) {
  const char* op = "adamw_step";
  check_dtype(p, DType::kF32, op, "p");
  check_float(g, op, "g");
  check_same_device(g, p, op, "g", "p");
  check_same_shape(m, p, op, "m", "p");
  check_same_shape(v, p, op, "v", "p");
  LINEA_CHECK(g.shape() == p.shape()) << op << ": g " << shape_str(g.shape())
                                      << " must have the shape of p " << shape_str(p.shape());
  if (p.numel() == 0) return;
  const Coeffs c{static_cast<float>(s.lr),
                 static_cast<float>(s.beta1),
                 static_cast<float>(s.beta2),
                 static_cast<float>(1 - s.beta1),
                 static_cast<float>(1 - s.beta2),
                 static_cast<float>(s.eps),
                 static_cast<float>(s.weight_decay),
                 static_cast<float>(1 / s.bias_correction1),
                 static_cast<float>(1 / s.bias_correction2)};
  OnDevice dev(p);
  const int block = 256, grid = grid_for(p.numel(), block, dev.index);
  dispatch(g.dtype(), [&](auto tag) {
    using G = decltype(tag);
    adamw_kernel<<<grid, block, 0, dev.stream>>>(p.data<float>(), ptr<G>(g), m.data<float>(),
                                                 v.data<float>(), p.numel(), c);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
