// Allocators own raw storage. The CPU allocator hands out 64-byte aligned blocks; a caching CUDA
// allocator will implement the same interface so that the step loop never calls cudaMalloc.
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
