// The caching CUDA allocator behind allocator_for(Device::cuda(i)).
//
// Design (docs/cuda.md): requests are rounded up to a size class (512 B steps below 1 MiB, then
// four classes per power of two, 2 MiB aligned); a freed block goes onto its class's free list
// and the next request of that class takes it, so a training step that repeats the same shapes
// calls cudaMalloc only in its first iteration. Blocks are never split or merged. Reuse follows
// the order of the device's current stream (core/tensor/cuda_stream.h): a block freed while
// kernels that use it are still queued is safe to hand out again to work on the same stream.
// When cudaMalloc fails, every cached block of the device is released and the call retried once.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/tensor/allocator.h"

namespace linea::cuda {

struct AllocatorStats {
  size_t bytes_in_use = 0;       // rounded sizes of live blocks
  size_t peak_bytes_in_use = 0;  // since the start or the last reset_peak()
  size_t bytes_reserved = 0;     // everything held from cudaMalloc (live + cached)
  int64_t cuda_malloc_calls = 0;
  int64_t cuda_free_calls = 0;
  int64_t allocations = 0;  // allocate() calls with bytes > 0
  int64_t cache_hits = 0;   // allocations served from a free list
};

// The process-wide caching allocator of device `index` (created on first use).
Allocator* caching_allocator(int index);
AllocatorStats allocator_stats(int index);
void reset_peak(int index);
// Returns every cached (free) block of the device to CUDA; live blocks are untouched.
void release_cached(int index);
// The size class a request of `bytes` is rounded to (exposed for tests).
size_t round_size(size_t bytes);

}  // namespace linea::cuda
