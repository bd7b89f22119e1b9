// CUDA SwiGLU (kernels/swiglu.h): element-wise in f32, 16-byte packs where every tensor is
// aligned (the tail, and unaligned views, element by element), grid-stride.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

// expf(-g) overflows to inf for very negative g, which still gives the right limit 0.
__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T, int N>
__global__ void swiglu_forward_kernel(const T* g, const T* u, int64_t n, T* h) {
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t j = first; j < packs; j += stride) {
    const Pack<T, N> gv = load_pack<T, N>(g, j), uv = load_pack<T, N>(u, j);
    Pack<T, N> o;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const float gi = to_float(gv.v[e]);
      o.v[e] = from_float<T>(gi * sigmoid(gi) * to_float(uv.v[e]));
    }
    store_pack<T, N>(h, j, o);
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    const float gi = to_float(g[i]);
    h[i] = from_float<T>(gi * sigmoid(gi) * to_float(u[i]));
  }
}

__device__ __forceinline__ void swiglu_grad(float gi, float ui, float d, float& dg, float& du) {
  const float s = sigmoid(gi);
  dg = d * ui * s * (1.0f + gi * (1.0f - s));
  du = d * gi * s;
}

template <typename T, int N>
__global__ void swiglu_backward_kernel(const T* g, const T* u, const T* dh, int64_t n, T* dg,
                                       T* du) {
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  // All reads of an element happen before its writes: dg/du may reuse the storage of g, u, dh.
  for (int64_t j = first; j < packs; j += stride) {
    const Pack<T, N> gv = load_pack<T, N>(g, j), uv = load_pack<T, N>(u, j),
                     dv = load_pack<T, N>(dh, j);
    Pack<T, N> og, ou;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      float a, b;
      swiglu_grad(to_float(gv.v[e]), to_float(uv.v[e]), to_float(dv.v[e]), a, b);
      og.v[e] = from_float<T>(a);
      ou.v[e] = from_float<T>(b);
    }
    store_pack<T, N>(dg, j, og);
    store_pack<T, N>(du, j, ou);
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    float a, b;
    swiglu_grad(to_float(g[i]), to_float(u[i]), to_float(dh[i]), a, b);
    dg[i] = from_float<T>(a);
    du[i] = from_float<T>(b);
  }
}

// Packed rows gu [rows, 2F] = [g | u]: element i of h [rows, F] (in packs of N along F, N | F).
template <typename T, int N>
__global__ void swiglu_packed_forward_kernel(const T* gu, int64_t rows, int64_t F, T* h) {
  const int64_t packs = rows * F / N, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < packs; j += stride) {
    const int64_t i = j * N, r = i / F, f = i - r * F;
    const int64_t gj = (r * 2 * F + f) / N, uj = gj + F / N;
    const Pack<T, N> gv = load_pack<T, N>(gu, gj), uv = load_pack<T, N>(gu, uj);
    Pack<T, N> o;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const float gi = to_float(gv.v[e]);
      o.v[e] = from_float<T>(gi * sigmoid(gi) * to_float(uv.v[e]));
    }
    store_pack<T, N>(h, j, o);
  }
}

template <typename T, int N>
__global__ void swiglu_packed_backward_kernel(const T* gu, const T* dh, int64_t rows, int64_t F,
                                              T* dgu) {
  const int64_t packs = rows * F / N, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < packs; j += stride) {
    const int64_t i = j * N, r = i / F, f = i - r * F;
    const int64_t gj = (r * 2 * F + f) / N, uj = gj + F / N;
    // Both packs read before both are written: dgu may be gu.
    const Pack<T, N> gv = load_pack<T, N>(gu, gj), uv = load_pack<T, N>(gu, uj),
                     dv = load_pack<T, N>(dh, j);
    Pack<T, N> og, ou;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      float a, b;
      swiglu_grad(to_float(gv.v[e]), to_float(uv.v[e]), to_float(dv.v[e]), a, b);
      og.v[e] = from_float<T>(a);
      ou.v[e] = from_float<T>(b);
    }
    store_pack<T, N>(dgu, gj, og);
    store_pack<T, N>(dgu, uj, ou);
  }
}

// gu [..., 2F], t [..., F] of the same leading shape; returns F.
int64_t check_packed(const Tensor& gu, const Tensor& t, const char* op, const char* name) {
  LINEA_CHECK(gu.ndim() >= 1 && gu.dim(-1) % 2 == 0)
      << op << ": gu " << shape_str(gu.shape()) << " must end in an even 2F";
  Shape expect = gu.shape();
  expect.back() /= 2;
  LINEA_CHECK(t.shape() == expect) << op << ": " << name << " " << shape_str(t.shape())
                                   << " must be " << shape_str(expect) << " (gu's F)";
  return expect.back();
}

bool all_aligned(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    if (!aligned16(t->raw())) return false;
  }
  return true;
}

}  // namespace

void swiglu_forward(const Tensor& g, const Tensor& u, Tensor& h) {
  const char* op = "swiglu_forward";
  check_float(g, op, "g");
  check_same_shape(u, g, op, "u", "g");
  check_same_shape(h, g, op, "h", "g");
  const int64_t n = g.numel();
  if (n == 0) return;
  OnDevice dev(g);
  const bool vec = all_aligned({&g, &u, &h});
  dispatch(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const int block = 256, grid = grid_for(vec ? (n + V - 1) / V : n, block, dev.index);
    if (vec) {
      swiglu_forward_kernel<T, V>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), n, ptr<T>(h));
    } else {
      swiglu_forward_kernel<T, 1>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), n, ptr<T>(h));
    }
  });
  CUDA_CHECK_LAUNCH();
}

void swiglu_backward(const Tensor& g, const Tensor& u, const Tensor& dh, Tensor& dg, Tensor& du) {
  const char* op = "swiglu_backward";
  check_float(g, op, "g");
  check_same_shape(u, g, op, "u", "g");
  check_same_shape(dh, g, op, "dh", "g");
  check_same_shape(dg, g, op, "dg", "g");
  check_same_shape(du, g, op, "du", "g");
  const int64_t n = g.numel();
  if (n == 0) return;
  OnDevice dev(g);
  const bool vec = all_aligned({&g, &u, &dh, &dg, &du});
  dispatch(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const int block = 256, grid = grid_for(vec ? (n + V - 1) / V : n, block, dev.index);
    if (vec) {
      swiglu_backward_kernel<T, V><<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), ptr<T>(dh),
                                                                   n, ptr<T>(dg), ptr<T>(du));
    } else {
      swiglu_backward_kernel<T, 1><<<grid, block, 0, dev.stream>>>(ptr<T>(g), ptr<T>(u), ptr<T>(dh),
                                                                   n, ptr<T>(dg), ptr<T>(du));
    }
  });
  CUDA_CHECK_LAUNCH();
}

void swiglu_packed_forward(const Tensor& gu, Tensor& h) {
  const char* op = "swiglu_packed_forward";
  check_float(gu, op, "gu");
  check_like(h, gu, op, "h", "gu");
  const int64_t F = check_packed(gu, h, op, "h");
  if (h.numel() == 0) return;
  const int64_t rows = h.numel() / F;
  OnDevice dev(gu);
  dispatch(gu.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const bool vec = F % V == 0 && all_aligned({&gu, &h});
    const int64_t n = vec ? rows * F / V : rows * F;
    const int block = 256, grid = grid_for(n, block, dev.index);
    if (vec) {
      swiglu_packed_forward_kernel<T, V>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(gu), rows, F, ptr<T>(h));
    } else {
      swiglu_packed_forward_kernel<T, 1>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(gu), rows, F, ptr<T>(h));
    }
  });
  CUDA_CHECK_LAUNCH();
}

void swiglu_packed_backward(const Tensor& gu, const Tensor& dh, Tensor& dgu) {
  const char* op = "swiglu_packed_backward";
  check_float(gu, op, "gu");
  check_like(dh, gu, op, "dh", "gu");
  check_same_shape(dgu, gu, op, "dgu", "gu");
  const int64_t F = check_packed(gu, dh, op, "dh");
  if (dh.numel() == 0) return;
  const int64_t rows = dh.numel() / F;
  OnDevice dev(gu);
  dispatch(gu.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const bool vec = F % V == 0 && all_aligned({&gu, &dh, &dgu});
    const int64_t n = vec ? rows * F / V : rows * F;
    const int block = 256, grid = grid_for(n, block, dev.index);
    if (vec) {
      swiglu_packed_backward_kernel<T, V>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(gu), ptr<T>(dh), rows, F, ptr<T>(dgu));
    } else {
      swiglu_packed_backward_kernel<T, 1>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(gu), ptr<T>(dh), rows, F, ptr<T>(dgu));
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
