// Internal to kernels/cuda: the cuBLAS handle of a device (kernels/cuda/matmul.cu), set to
// `stream` with its 32 MiB workspace; created on first use and kept for the life of the process.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace linea::kernels::cuda {

cublasHandle_t handle_on(int device, cudaStream_t stream);

}  // namespace linea::kernels::cuda
