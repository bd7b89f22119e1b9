#include "core/tensor/device.h"

namespace linea {
namespace {
thread_local Device current_default = Device::cpu();
}  // namespace

Device default_device() { return current_default; }

DefaultDeviceScope::DefaultDeviceScope(Device d) : previous_(current_default) {
  current_default = d;
}

DefaultDeviceScope::~DefaultDeviceScope() { current_default = previous_; }

}  // namespace linea
