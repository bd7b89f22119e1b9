#include "kernels/sequence.h"

#include <cstring>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {
// Bytes of one time step of one sequence: the product of the dimensions after [B, T].
size_t row_bytes(const Tensor& x) {
  return dtype_size(x.dtype()) *
         static_cast<size_t>(shape_numel(Shape(x.shape().begin() + 2, x.shape().end())));
}
}  // namespace

Tensor concat_time(const Tensor& a, const Tensor& b) {
  LINEA_ON_CUDA(a, concat_time(a, b));
  LINEA_CHECK(a.ndim() >= 2 && a.ndim() == b.ndim() && a.dim(0) == b.dim(0) &&
              a.dtype() == b.dtype())
      << "concat_time: " << shape_str(a.shape()) << " and " << shape_str(b.shape());
  for (int64_t i = 2; i < a.ndim(); ++i)
    LINEA_CHECK(a.dim(i) == b.dim(i))
        << "concat_time: " << shape_str(a.shape()) << " and " << shape_str(b.shape());
  LINEA_CHECK(a.device().is_cpu() && b.device().is_cpu())
      << "concat_time: a on " << a.device().str() << ", b on " << b.device().str()
      << " (one device)";
  Shape s = a.shape();
  s[1] = a.dim(1) + b.dim(1);
  Tensor out = Tensor::empty(s, a.dtype(), Device::cpu());
  const size_t row = row_bytes(a);
  const size_t na = row * a.dim(1), nb = row * b.dim(1);
  auto* o = static_cast<char*>(out.raw());
  for (int64_t i = 0; i < a.dim(0); ++i) {
    if (na) std::memcpy(o + i * (na + nb), static_cast<const char*>(a.raw()) + i * na, na);
    if (nb) std::memcpy(o + i * (na + nb) + na, static_cast<const char*>(b.raw()) + i * nb, nb);
  }
  return out;
}

Tensor slice_time(const Tensor& x, int64_t begin, int64_t end) {
  LINEA_ON_CUDA(x, slice_time(x, begin, end));
  LINEA_CHECK(x.ndim() >= 2 && 0 <= begin && begin <= end && end <= x.dim(1))
      << "slice_time [" << begin << ", " << end << ") of " << shape_str(x.shape());
  Shape s = x.shape();
  s[1] = end - begin;
  Tensor out = Tensor::empty(s, x.dtype(), Device::cpu());
  const size_t row = row_bytes(x);
  const size_t n = row * (end - begin);
  for (int64_t i = 0; i < x.dim(0); ++i)
    if (n)
      std::memcpy(static_cast<char*>(out.raw()) + i * n,
                  static_cast<const char*>(x.raw()) + (i * x.dim(1) + begin) * row, n);
  return out;
}

}  // namespace linea::kernels
