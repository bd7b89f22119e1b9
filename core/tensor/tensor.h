// Tensor: a shape, a dtype, a device and contiguous storage shared through a reference count.
// Views are cheap only along the leading dimension (`slice`) and for reshapes (`view`); every
// other op writes new storage. Shapes are row-major.
//
// CUDA tensors (LINEA_CUDA builds): storage from the caching allocator; zero_, fill_, clone and
// same-device copies are queued on the device's current stream (core/tensor/cuda_stream.h);
// copies to or from the CPU return once the data has arrived. Element access (item,
// to_vector) copies to the host; set_item and from_vector are CPU only.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/allocator.h"
#include "core/tensor/device.h"
#include "core/tensor/dtype.h"
#include "core/util/check.h"

namespace linea {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Storage {
 public:
  Storage(size_t bytes, Allocator* alloc);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return alloc_->device(); }

 private:
  void* data_;
  size_t bytes_;
  Allocator* alloc_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() is false

  // Without a device: default_device() (the CPU unless a DefaultDeviceScope says otherwise).
  static Tensor empty(const Shape& shape, DType dtype, Device device = default_device());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = default_device());
  // CPU only: copies `values` (converted to dtype).
  static Tensor from_vector(const Shape& shape, const std::vector<double>& values, DType dtype);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t ndim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const;  // negative i counts from the end
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }

  void* raw() const;
  template <typename T>
  T* data() const {
    LINEA_CHECK(DTypeOf<T>::value == dtype_)
        << "tensor holds " << dtype_name(dtype_) << ", asked as " << dtype_name(DTypeOf<T>::value);
    return static_cast<T*>(raw());
  }

  // View of rows [begin, end) of the leading dimension; shares storage.
  Tensor slice(int64_t begin, int64_t end) const;
  // Same storage, new shape with the same numel; one dimension may be -1.
  Tensor view(const Shape& shape) const;
  // New storage with the same contents.
  Tensor clone() const;
  // Converted copy on the same device (CUDA converts between f32, bf16 and f64 only).
  Tensor to(DType dtype) const;
  // Copy on `device` with the same dtype; this very tensor (shared storage) when already there.
  Tensor to(Device device) const;
  Tensor cuda(int index = 0) const { return to(Device::cuda(index)); }
  Tensor cpu() const { return to(Device::cpu()); }
  void zero_();
  void fill_(double value);
  // Element-wise copy from a tensor of the same numel, on any devices; dtype converted where
  // the two differ (on the CPU, or on the GPU between f32, bf16 and f64).
  void copy_from(const Tensor& src);
  // Reads one element as double (CPU; for tests and logging).
  double item(int64_t flat_index = 0) const;
  void set_item(int64_t flat_index, double value);
  std::vector<double> to_vector() const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::kF32;
};

}  // namespace linea
