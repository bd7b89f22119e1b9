// Where a tensor's storage lives: the CPU, or CUDA device n (built with LINEA_CUDA; a CPU-only
// build rejects CUDA devices when storage is requested for them).
#pragma once

#include <string>

namespace linea {

struct Device {
  enum class Kind { kCPU, kCUDA };
  Kind kind = Kind::kCPU;
  int index = 0;

  static Device cpu() { return Device{}; }
  static Device cuda(int i) { return Device{Kind::kCUDA, i}; }
  bool is_cpu() const { return kind == Kind::kCPU; }
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

// Where Tensor::empty and Tensor::zeros allocate when no device is named: the CPU, unless a
// DefaultDeviceScope of this thread says otherwise. The model sets it to its parameters' device
// for a forward and backward, so that modules allocate their activations next to their inputs
// without naming a device at each of their allocations.
Device default_device();

class DefaultDeviceScope {
 public:
  explicit DefaultDeviceScope(Device d);
  ~DefaultDeviceScope();
  DefaultDeviceScope(const DefaultDeviceScope&) = delete;
  DefaultDeviceScope& operator=(const DefaultDeviceScope&) = delete;

 private:
  Device previous_;
};

}  // namespace linea
