#include "core/tensor/tensor.h"

#include <cstring>
#include <sstream>

#ifdef LINEA_HAS_CUDA
#include "core/tensor/cuda_tensor_ops.h"
#endif

namespace linea {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    LINEA_CHECK(d >= 0) << "negative dimension in " << shape_str(s);
    n *= d;
  }
  return n;
}

Storage::Storage(size_t bytes, Allocator* alloc)
    : data_(alloc->allocate(bytes)), bytes_(bytes), alloc_(alloc) {}
Storage::~Storage() { alloc_->deallocate(data_, bytes_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(t.nbytes(), allocator_for(device));
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<double>& values, DType dtype) {
  Tensor t = empty(shape, dtype, Device::cpu());
  LINEA_CHECK(static_cast<int64_t>(values.size()) == t.numel())
      << values.size() << " values for shape " << shape_str(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.set_item(i, values[i]);
  return t;
}

int64_t Tensor::dim(int64_t i) const {
  int64_t n = ndim();
  if (i < 0) i += n;
  LINEA_CHECK(i >= 0 && i < n) << "dim " << i << " of shape " << shape_str(shape_);
  return shape_[i];
}

void* Tensor::raw() const {
  LINEA_CHECK(storage_) << "undefined tensor";
  return static_cast<char*>(storage_->data()) + offset_;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  LINEA_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0])
      << "slice [" << begin << ", " << end << ") of shape " << shape_str(shape_);
  Tensor t = *this;
  int64_t row = numel_ / (shape_[0] ? shape_[0] : 1);
  t.offset_ = offset_ + static_cast<size_t>(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  t.numel_ = row * (end - begin);
  return t;
}

Tensor Tensor::view(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      LINEA_CHECK(infer < 0) << "two -1 in view " << shape_str(shape);
      infer = static_cast<int64_t>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known ? numel_ / known : 0;
  LINEA_CHECK(shape_numel(s) == numel_)
      << "cannot view " << shape_str(shape_) << " as " << shape_str(shape);
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  if (!device().is_cpu()) {
    t.copy_from(*this);
  } else if (nbytes()) {
    std::memcpy(t.raw(), raw(), nbytes());
  }
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor t = empty(shape_, dtype, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

void Tensor::zero_() {
  if (!nbytes()) return;
#ifdef LINEA_HAS_CUDA
  if (!device().is_cpu()) return cuda::zero_bytes(raw(), device().index, nbytes());
#endif
  std::memset(raw(), 0, nbytes());
}

void Tensor::fill_(double value) {
#ifdef LINEA_HAS_CUDA
  if (!device().is_cpu()) {
    // The value in this dtype's bits, built by the CPU path, then replicated on the device.
    Tensor one = empty({1}, dtype_, Device::cpu());
    one.set_item(0, value);
    uint64_t pattern = 0;
    std::memcpy(&pattern, one.raw(), dtype_size(dtype_));
    return cuda::fill_pattern(raw(), device().index, numel_, dtype_size(dtype_), pattern);
  }
#endif
  for (int64_t i = 0; i < numel_; ++i) set_item(i, value);
}

namespace {
template <typename F>
void visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::kF32:
      f(float{});
      break;
    case DType::kF64:
      f(double{});
      break;
    case DType::kBF16:
      f(BF16{});
      break;
    case DType::kI32:
      f(int32_t{});
      break;
    case DType::kI64:
      f(int64_t{});
      break;
  }
}
template <typename T>
double load(const void* p, int64_t i) {
  if constexpr (std::is_same_v<T, BF16>) {
    return bf16_to_float(static_cast<const BF16*>(p)[i]);
  } else {
    return static_cast<double>(static_cast<const T*>(p)[i]);
  }
}
template <typename T>
void store(void* p, int64_t i, double v) {
  if constexpr (std::is_same_v<T, BF16>) {
    static_cast<BF16*>(p)[i] = float_to_bf16(static_cast<float>(v));
  } else {
    static_cast<T*>(p)[i] = static_cast<T>(v);
  }
}
#ifdef LINEA_HAS_CUDA
// A copy with a GPU on at least one side. Conversions run where the data is smaller or already
// is: on the CPU before an upload, after a download, or on the GPU within one device.
void copy_with_cuda(Tensor& dst, const Tensor& src) {
  if (src.dtype() == dst.dtype()) {
    cuda::copy_bytes(dst.raw(), dst.device(), src.raw(), src.device(), dst.nbytes());
  } else if (dst.device().is_cpu()) {
    dst.copy_from(src.cpu());
  } else if (src.device().is_cpu()) {
    dst.copy_from(src.to(dst.dtype()));
  } else if (src.device() == dst.device()) {
    cuda::convert(src.raw(), src.dtype(), dst.raw(), dst.dtype(), dst.numel(), dst.device().index);
  } else {
    dst.copy_from(src.to(dst.device()));
  }
}
#endif

}  // namespace

void Tensor::copy_from(const Tensor& src) {
  LINEA_CHECK(src.numel() == numel_)
      << "copy of " << shape_str(src.shape()) << " into " << shape_str(shape_);
#ifdef LINEA_HAS_CUDA
  if (!device().is_cpu() || !src.device().is_cpu()) return copy_with_cuda(*this, src);
#endif
  if (src.dtype() == dtype_) {
    if (nbytes()) std::memcpy(raw(), src.raw(), nbytes());
    return;
  }
  for (int64_t i = 0; i < numel_; ++i) set_item(i, src.item(i));
}

double Tensor::item(int64_t i) const {
  LINEA_CHECK(i >= 0 && i < numel_) << "index " << i << " of " << numel_;
#ifdef LINEA_HAS_CUDA
  if (!device().is_cpu()) return view({numel_}).slice(i, i + 1).cpu().item(0);
#endif
  double out = 0;
  visit_dtype(dtype_, [&](auto tag) { out = load<decltype(tag)>(raw(), i); });
  return out;
}

void Tensor::set_item(int64_t i, double v) {
  LINEA_CHECK(i >= 0 && i < numel_) << "index " << i << " of " << numel_;
#ifdef LINEA_HAS_CUDA
  LINEA_CHECK(device().is_cpu()) << "set_item on a " << device().str()
                                 << " tensor: write on the CPU, then copy (copy_from, .cuda())";
#endif
  visit_dtype(dtype_, [&](auto tag) { store<decltype(tag)>(raw(), i, v); });
}

std::vector<double> Tensor::to_vector() const {
  if (!device().is_cpu()) return cpu().to_vector();
  std::vector<double> v(numel_);
  for (int64_t i = 0; i < numel_; ++i) v[i] = item(i);
  return v;
}

}  // namespace linea
