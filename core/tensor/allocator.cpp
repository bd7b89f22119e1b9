#include "core/tensor/allocator.h"

#include <cstdlib>
#include <new>

#include "core/util/check.h"

#ifdef LINEA_HAS_CUDA
#include "core/tensor/cuda_allocator.h"
#endif

namespace linea {
namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p, size_t) override { std::free(p); }
  Device device() const override { return Device::cpu(); }
};

}  // namespace

Allocator* allocator_for(Device d) {
  static CpuAllocator cpu;
#ifdef LINEA_HAS_CUDA
  if (!d.is_cpu()) return cuda::caching_allocator(d.index);
#endif
  LINEA_USER_CHECK(d.is_cpu(), "this build has no CUDA backend; configure with LINEA_CUDA=ON")
      << "no allocator for device " << d.str();
  return &cpu;
}

}  // namespace linea
