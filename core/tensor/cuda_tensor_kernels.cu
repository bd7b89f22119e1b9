// Device kernels behind Tensor::fill_ and dtype conversion on CUDA (core/tensor/cuda_tensor_ops.h).
#include <cuda_bf16.h>

#include <cstdint>

#include "core/tensor/cuda_device.h"
#include "core/tensor/cuda_stream.h"
#include "core/tensor/cuda_tensor_ops.h"
#include "core/util/cuda_check.h"

namespace linea::cuda {
namespace {

int grid_for(int64_t n, int block) {
  const int64_t need = (n + block - 1) / block;
  return static_cast<int>(need < 1 ? 1 : (need < 4096 ? need : 4096));
}

template <typename W>
__global__ void fill_kernel(W* dst, int64_t n, W value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = value;
  }
}

// Conversions as the CPU does them: through double, except that bf16 is rounded from f32
// (so f64 -> bf16 rounds twice, f64 -> f32 -> bf16, exactly like Tensor::set_item).
__device__ __forceinline__ double load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load(const double* p, int64_t i) { return p[i]; }
__device__ __forceinline__ double load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, double v) {
  p[i] = static_cast<float>(v);
}
__device__ __forceinline__ void store(double* p, int64_t i, double v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, double v) {
  p[i] = __float2bfloat16_rn(static_cast<float>(v));
}

template <typename S, typename D>
__global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    store(dst, i, load(src, i));
  }
}

template <typename F>
void visit_storage_float(DType t, const char* what, F&& f) {
  switch (t) {
    case DType::kF32:
      return f(float{});
    case DType::kF64:
      return f(double{});
    case DType::kBF16:
      return f(__nv_bfloat16{});
    default:
      LINEA_CHECK(false) << "dtype conversion on CUDA handles f32, bf16 and f64; " << what << " is "
                         << dtype_name(t) << " (convert integer tensors on the CPU)";
  }
}

}  // namespace

void fill_pattern(void* dst, int device, int64_t n, size_t elem_size, uint64_t pattern) {
  if (n == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = current_stream(device);
  const int block = 256, grid = grid_for(n, block);
  switch (elem_size) {
    case 1:
      fill_kernel<<<grid, block, 0, s>>>(static_cast<uint8_t*>(dst), n,
                                         static_cast<uint8_t>(pattern));
      break;
    case 2:
      fill_kernel<<<grid, block, 0, s>>>(static_cast<uint16_t*>(dst), n,
                                         static_cast<uint16_t>(pattern));
      break;
    case 4:
      fill_kernel<<<grid, block, 0, s>>>(static_cast<uint32_t*>(dst), n,
                                         static_cast<uint32_t>(pattern));
      break;
    case 8:
      fill_kernel<<<grid, block, 0, s>>>(static_cast<uint64_t*>(dst), n, pattern);
      break;
    default:
      LINEA_CHECK(false) << "fill_pattern: element size " << elem_size;
  }
  CUDA_CHECK_LAUNCH();
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, int device) {
  if (n == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = current_stream(device);
  const int block = 256, grid = grid_for(n, block);
  visit_storage_float(src_dtype, "the source", [&](auto src_tag) {
    using S = decltype(src_tag);
    visit_storage_float(dst_dtype, "the destination", [&](auto dst_tag) {
      using D = decltype(dst_tag);
      convert_kernel<<<grid, block, 0, s>>>(static_cast<const S*>(src), static_cast<D*>(dst), n);
    });
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::cuda
