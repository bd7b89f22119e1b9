// GPUs as the CUDA runtime sees them: how many there are (0, never an error, where there is no
// driver or no GPU), why not, and a guard that makes one device current for a scope.
// Built only with LINEA_CUDA (LINEA_HAS_CUDA is defined for code that may call it).
#pragma once

#include <string>

namespace linea::cuda {

// Number of usable CUDA devices; 0 when cudaGetDeviceCount fails (no driver, no GPU).
int device_count();
// Why device_count() is 0 ("" when there are devices), for skip messages and errors.
std::string unavailable_reason();
// Throws linea::Error with a hint when device `index` does not exist.
void check_device(int index, const char* what);

// Makes `index` the current device until the end of the scope (restores the previous one).
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace linea::cuda
