// The CUDA side of Tensor's own operations (copies, zero_, fill_, dtype conversion), in raw
// pointers so that core/tensor/tensor.cpp needs no CUDA header. Work is queued on the current
// stream of the CUDA device involved (core/tensor/cuda_stream.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/tensor/device.h"
#include "core/tensor/dtype.h"

namespace linea::cuda {

// Any direction between the CPU and CUDA devices. Copies with a CPU side (or across two GPUs)
// return once complete; a copy within one GPU is only queued.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void zero_bytes(void* dst, int device, size_t bytes);
// Writes n elements of elem_size (1, 2, 4 or 8) bytes, each the low bytes of `pattern`.
void fill_pattern(void* dst, int device, int64_t n, size_t elem_size, uint64_t pattern);
// dst[i] = src[i] converted, for f32, bf16 and f64 (as the CPU converts: f64 to bf16 via f32).
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, int device);

}  // namespace linea::cuda
