// Allocators own raw storage. The CPU allocator hands out 64-byte aligned blocks; the caching
// CUDA allocator (core/tensor/cuda_allocator.h, LINEA_CUDA builds) implements the same interface
// so that the step loop never calls cudaMalloc once warm.
#pragma once

#include <cstddef>

#include "core/tensor/device.h"

namespace linea {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) = 0;
  virtual Device device() const = 0;
};

// Process-wide allocator for a device (the CPU one is stateless and thread-safe).
Allocator* allocator_for(Device d);

}  // namespace linea
