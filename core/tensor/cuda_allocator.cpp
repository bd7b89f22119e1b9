#include "core/tensor/cuda_allocator.h"

#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "core/tensor/cuda_device.h"
#include "core/util/cuda_check.h"

namespace linea::cuda {
namespace {

constexpr size_t kSmallStep = 512;
constexpr size_t kSmallLimit = size_t(1) << 20;
constexpr size_t kLargeAlign = size_t(2) << 20;

std::string mib(size_t b) {
  std::ostringstream os;
  os.precision(1);
  os << std::fixed << static_cast<double>(b) / (1 << 20) << " MiB";
  return os.str();
}

class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(int index) : index_(index) {}

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.allocations;
    void* p = nullptr;
    auto it = free_.find(size);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      ++stats_.cache_hits;
    } else {
      p = malloc_locked(size, bytes);
      stats_.bytes_reserved += size;
    }
    live_[p] = size;
    stats_.bytes_in_use += size;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) {
      stats_.peak_bytes_in_use = stats_.bytes_in_use;
    }
    return p;
  }

  void deallocate(void* p, size_t) override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    LINEA_CHECK(it != live_.end()) << "cuda:" << index_ << " allocator: free of unknown block";
    const size_t size = it->second;
    live_.erase(it);
    stats_.bytes_in_use -= size;
    free_[size].push_back(p);
  }

  Device device() const override { return Device::cuda(index_); }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }
  void release_cached() {
    std::lock_guard<std::mutex> lock(mu_);
    release_locked();
  }

 private:
  void* malloc_locked(size_t size, size_t asked) {
    DeviceGuard guard(index_);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      release_locked();  // cached blocks of other size classes may cover the request together
      e = cudaMalloc(&p, size);
    }
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      LINEA_USER_CHECK(false,
                       "the GPU is out of memory: lower the micro-batch size or sequence length, "
                       "or turn on activation checkpointing")
          << "cuda:" << index_ << " out of memory allocating " << mib(asked) << " (class "
          << mib(size) << "); in use " << mib(stats_.bytes_in_use) << ", reserved "
          << mib(stats_.bytes_reserved) << ", free on device " << mib(free_b) << " of "
          << mib(total_b);
    }
    CUDA_CHECK(e);
    ++stats_.cuda_malloc_calls;
    return p;
  }

  void release_locked() {
    DeviceGuard guard(index_);
    // Queued kernels may still use blocks that were freed in stream order: wait for them.
    CUDA_CHECK(cudaDeviceSynchronize());
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) {
        CUDA_CHECK(cudaFree(p));
        ++stats_.cuda_free_calls;
        stats_.bytes_reserved -= size;
      }
      blocks.clear();
    }
    free_.clear();
  }

  int index_;
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  std::unordered_map<void*, size_t> live_;     // block -> its size class
  AllocatorStats stats_;
};

// One allocator per device, created on first use and never destroyed (the CUDA runtime may be
// gone by the time static destructors run; the driver frees everything at exit).
CachingAllocator& allocator(int index) {
  static std::mutex mu;
  static std::vector<CachingAllocator*>* all = new std::vector<CachingAllocator*>();
  std::lock_guard<std::mutex> lock(mu);
  if (all->empty()) {
    check_device(index, "caching allocator");
    all->assign(device_count(), nullptr);
  }
  check_device(index, "caching allocator");
  if (!(*all)[index]) (*all)[index] = new CachingAllocator(index);
  return *(*all)[index];
}

}  // namespace

size_t round_size(size_t bytes) {
  if (bytes <= kSmallLimit) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  // Four classes per octave: at most 25% slack, and a workload whose sizes wander a little
  // still lands in the same few classes.
  size_t octave = kSmallLimit;
  while (octave * 2 < bytes) octave *= 2;
  const size_t step = octave / 4;
  size_t size = (bytes + step - 1) / step * step;
  return (size + kLargeAlign - 1) / kLargeAlign * kLargeAlign;
}

Allocator* caching_allocator(int index) { return &allocator(index); }
AllocatorStats allocator_stats(int index) { return allocator(index).stats(); }
void reset_peak(int index) { allocator(index).reset_peak(); }
void release_cached(int index) { allocator(index).release_cached(); }

}  // namespace linea::cuda
