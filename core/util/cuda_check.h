// Checks for CUDA, cuBLAS and NCCL calls that say where and what to do.
//
// CUDA_CHECK(expr)    expr returns cudaError_t
// CUDA_CHECK_LAUNCH() after a kernel launch: the launch error (cudaGetLastError)
// CUBLAS_CHECK(expr)  expr returns cublasStatus_t (include <cublas_v2.h> first)
// NCCL_CHECK(expr)    expr returns ncclResult_t (include <nccl.h> first)
// Each throws linea::Error with file:line, the rank of this process, the failed expression and
// the library's error string; errors a user can cause (no GPU, out of memory) add a `hint:` line.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "core/util/check.h"

namespace linea::detail {

// The launcher's rank (Open MPI, then PMI/MPICH, then Slurm), or -1 outside a parallel launch.
// Read from the environment so that a check can fire before MPI or logging are initialised.
inline int launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return -1;
}

[[noreturn]] inline void throw_gpu_error(const char* library, const char* expr, long code,
                                         const char* what, const char* hint, const char* file,
                                         int line) {
  std::ostringstream os;
  os << file << ":" << line << ": [rank " << launcher_rank() << "] " << library << " error " << code
     << " (" << (what ? what : "unknown") << ") in " << expr;
  if (hint && *hint) os << "\nhint: " << hint;
  throw Error(os.str());
}

inline const char* cuda_error_hint(cudaError_t e) {
  switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return "no usable GPU here: check nvidia-smi and CUDA_VISIBLE_DEVICES, or run on CPU";
    case cudaErrorMemoryAllocation:
      return "the GPU is out of memory: lower the micro-batch size or sequence length, or turn "
             "on activation checkpointing";
    case cudaErrorInvalidDevice:
      return "the device index is out of range: one GPU per rank, local rank < GPUs per node";
    default:
      return nullptr;
  }
}

}  // namespace linea::detail

#define CUDA_CHECK(expr)                                                                \
  do {                                                                                  \
    const cudaError_t linea_err_ = (expr);                                              \
    if (linea_err_ != cudaSuccess) {                                                    \
      ::linea::detail::throw_gpu_error(                                                 \
          "CUDA", #expr, static_cast<long>(linea_err_), cudaGetErrorString(linea_err_), \
          ::linea::detail::cuda_error_hint(linea_err_), __FILE__, __LINE__);            \
    }                                                                                   \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                      \
    const cublasStatus_t linea_st_ = (expr);                                                \
    if (linea_st_ != CUBLAS_STATUS_SUCCESS) {                                               \
      ::linea::detail::throw_gpu_error("cuBLAS", #expr, static_cast<long>(linea_st_),       \
                                       cublasGetStatusString(linea_st_), nullptr, __FILE__, \
                                       __LINE__);                                           \
    }                                                                                       \
  } while (0)

#define NCCL_CHECK(expr)                                                              \
  do {                                                                                \
    const ncclResult_t linea_nr_ = (expr);                                            \
    if (linea_nr_ != ncclSuccess) {                                                   \
      ::linea::detail::throw_gpu_error(                                               \
          "NCCL", #expr, static_cast<long>(linea_nr_), ncclGetErrorString(linea_nr_), \
          "set NCCL_DEBUG=INFO for NCCL's own account", __FILE__, __LINE__);          \
    }                                                                                 \
  } while (0)
