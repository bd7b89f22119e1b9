#include "core/tensor/cuda_tensor_ops.h"

#include <cuda_runtime_api.h>

#include "core/tensor/cuda_device.h"
#include "core/tensor/cuda_stream.h"
#include "core/util/cuda_check.h"

namespace linea::cuda {

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (!dst_device.is_cpu() && !src_device.is_cpu()) {
    const int d = dst_device.index, s = src_device.index;
    cudaStream_t stream = current_stream(d);
    DeviceGuard guard(d);
    if (d == s) {
      CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
      return;
    }
    // The source's queued writes must land first; then the peer copy runs on dst's stream.
    synchronize(s);
    CUDA_CHECK(cudaMemcpyPeerAsync(dst, d, src, s, bytes, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return;
  }
  const bool upload = src_device.is_cpu();
  const int gpu = upload ? dst_device.index : src_device.index;
  cudaStream_t stream = current_stream(gpu);
  DeviceGuard guard(gpu);
  // Stream-ordered after the kernels that produced (download) or will overwrite (upload) the
  // device side; the wait makes host memory safe to read or free on return.
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes,
                             upload ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void zero_bytes(void* dst, int device, size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard guard(device);
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, current_stream(device)));
}

}  // namespace linea::cuda
