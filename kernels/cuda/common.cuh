// Internal to kernels/cuda: argument checks, the f32/bf16 dispatch, element conversion, launch
// geometry and block reductions shared by the CUDA kernels. Arithmetic is f32 whatever the
// storage dtype; reductions that the CPU does in f64 are f32 per thread and f64 where they
// leave a block only when said so in the kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>

#include "core/tensor/cuda_device.h"
#include "core/tensor/cuda_stream.h"
#include "core/tensor/tensor.h"
#include "core/util/cuda_check.h"

namespace linea::kernels::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// The device pointer of a tensor as the kernel's element type (BF16 storage is __nv_bfloat16).
template <typename T>
T* ptr(const Tensor& t) {
  if constexpr (std::is_same_v<T, bf16>) {
    return reinterpret_cast<bf16*>(t.data<BF16>());
  } else {
    return t.data<T>();
  }
}

inline std::string describe(const Tensor& t) {
  return shape_str(t.shape()) + " " + dtype_name(t.dtype()) + " on " + t.device().str();
}

inline void check_cuda(const Tensor& t, const char* op, const char* name) {
  LINEA_CHECK(t.defined()) << op << ": " << name << " is undefined";
  LINEA_CHECK(!t.device().is_cpu()) << op << ": " << name << " " << describe(t)
                                    << " must be on a CUDA device (the CUDA kernel was chosen)";
}

// A CUDA tensor of f32 or bf16 (the storage dtypes of the GPU path).
inline void check_float(const Tensor& t, const char* op, const char* name) {
  check_cuda(t, op, name);
  LINEA_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16)
      << op << ": " << name << " " << describe(t) << " must be f32 or bf16 on CUDA";
}

inline void check_dtype(const Tensor& t, DType dt, const char* op, const char* name) {
  check_cuda(t, op, name);
  LINEA_CHECK(t.dtype() == dt) << op << ": " << name << " " << describe(t) << " must be "
                               << dtype_name(dt) << " on CUDA";
}

inline void check_same_device(const Tensor& t, const Tensor& ref, const char* op, const char* name,
                              const char* ref_name) {
  LINEA_CHECK(t.device() == ref.device())
      << op << ": " << name << " " << describe(t) << " and " << ref_name << " " << describe(ref)
      << " must be on one device";
}

// Same device and dtype as `ref`.
inline void check_like(const Tensor& t, const Tensor& ref, const char* op, const char* name,
                       const char* ref_name) {
  check_float(t, op, name);
  check_same_device(t, ref, op, name, ref_name);
  LINEA_CHECK(t.dtype() == ref.dtype())
      << op << ": " << name << " " << describe(t) << " and " << ref_name << " " << describe(ref)
      << " must have one dtype";
}

inline void check_same_shape(const Tensor& t, const Tensor& ref, const char* op, const char* name,
                             const char* ref_name) {
  check_like(t, ref, op, name, ref_name);
  LINEA_CHECK(t.shape() == ref.shape())
      << op << ": " << name << " " << shape_str(t.shape()) << " must have the shape of " << ref_name
      << " " << shape_str(ref.shape());
}

// f(float{}) or f(bf16{}); the caller has checked the dtype.
template <typename F>
decltype(auto) dispatch(DType dt, F&& f) {
  if (dt == DType::kF32) return f(float{});
  LINEA_CHECK(dt == DType::kBF16) << "expected f32 or bf16, got " << dtype_name(dt);
  return f(bf16{});
}

// The device of `t` made current for the scope, and its current stream.
class OnDevice {
 public:
  explicit OnDevice(const Tensor& t) : OnDevice(t.device().index) {}
  explicit OnDevice(int index)
      : index(index), guard_(index), stream(::linea::cuda::current_stream(index)) {}
  const int index;

 private:
  ::linea::cuda::DeviceGuard guard_;

 public:
  const cudaStream_t stream;
};

inline int multiprocessors(int device) {
  static int count[64] = {};
  if (!count[device]) {
    CUDA_CHECK(cudaDeviceGetAttribute(&count[device], cudaDevAttrMultiProcessorCount, device));
  }
  return count[device];
}

// Blocks for a grid-stride loop over n items: enough to fill the GPU, no more than needed.
inline int grid_for(int64_t n, int block, int device, int blocks_per_sm = 8) {
  const int64_t need = (n + block - 1) / block;
  const int64_t cap = static_cast<int64_t>(multiprocessors(device)) * blocks_per_sm;
  return static_cast<int>(need < 1 ? 1 : (need < cap ? need : cap));
}

// N consecutive elements; with N * sizeof(T) == 16 they move as one 16-byte access (the
// caller has checked alignment), otherwise element by element.
template <typename T, int N>
struct Pack {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p, int64_t j) {
  if constexpr (N * sizeof(T) == 16) {
    union {
      uint4 raw;
      Pack<T, N> pack;
    } u;
    u.raw = reinterpret_cast<const uint4*>(p)[j];
    return u.pack;
  } else {
    Pack<T, N> out;
#pragma unroll
    for (int e = 0; e < N; ++e) out.v[e] = p[j * N + e];
    return out;
  }
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, int64_t j, const Pack<T, N>& v) {
  if constexpr (N * sizeof(T) == 16) {
    union {
      uint4 raw;
      Pack<T, N> pack;
    } u;
    u.pack = v;
    reinterpret_cast<uint4*>(p)[j] = u.raw;
  } else {
#pragma unroll
    for (int e = 0; e < N; ++e) p[j * N + e] = v.v[e];
  }
}

// Elements per 16-byte access.
template <typename T>
constexpr int kVec = 16 / sizeof(T);

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 values; the call begins and ends with a barrier, so it may be reused.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = lane < warps ? scratch[lane] : T(0);
  return warp_sum(total);
}

}  // namespace linea::kernels::cuda
