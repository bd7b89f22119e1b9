// fill_normal (kernels/cuda/ops.h): N(0, stddev) from a counter-based hash of (seed, index), so
// the values do not depend on the launch geometry. Box-Muller on pairs of uniforms.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

__device__ __forceinline__ uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

template <typename T>
__global__ void fill_normal_kernel(T* out, int64_t n, uint64_t seed, float stddev) {
  const int64_t pairs = (n + 1) / 2;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t h = mix(seed ^ mix(static_cast<uint64_t>(p)));
    // 24-bit uniforms in (0, 1]: log never sees 0.
    const float u1 = (static_cast<float>(h >> 40) + 1.0f) * 0x1.0p-24f;
    const float u2 = static_cast<float>((h >> 16) & 0xffffffu) * 0x1.0p-24f;
    const float r = stddev * sqrtf(-2.0f * logf(u1));
    float s, c;
    sincospif(2.0f * u2, &s, &c);
    out[2 * p] = from_float<T>(r * c);
    if (2 * p + 1 < n) out[2 * p + 1] = from_float<T>(r * s);
  }
}

}  // namespace

void fill_normal(Tensor& t, uint64_t seed, double stddev) {
  check_float(t, "fill_normal", "t");
  if (t.numel() == 0) return;
  OnDevice dev(t);
  const int block = 256;
  const int grid = grid_for((t.numel() + 1) / 2, block, dev.index);
  dispatch(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    fill_normal_kernel<<<grid, block, 0, dev.stream>>>(ptr<T>(t), t.numel(), seed,
                                                       static_cast<float>(stddev));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
