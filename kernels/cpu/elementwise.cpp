#include "kernels/elementwise.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {

void add(const Tensor& a, const Tensor& b, Tensor& out) {
  LINEA_ON_CUDA(a, add(a, b, out));
  const char* op = "add";
  cpu::check_float(a, op, "a");
  cpu::check_same_shape(b, a, op, "b", "a");
  cpu::check_same_shape(out, a, op, "out", "a");
  cpu::dispatch_float(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    T* o = out.data<T>();
    for (int64_t i = 0, n = a.numel(); i < n; ++i) o[i] = ap[i] + bp[i];
  });
}

void add_inplace(Tensor& a, const Tensor& b) {
  LINEA_ON_CUDA(a, add_inplace(a, b));
  const char* op = "add_inplace";
  cpu::check_float(a, op, "a");
  cpu::check_same_shape(b, a, op, "b", "a");
  cpu::dispatch_float(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* ap = a.data<T>();
    const T* bp = b.data<T>();
    for (int64_t i = 0, n = a.numel(); i < n; ++i) ap[i] += bp[i];
  });
}

void accumulate(Tensor& a, const Tensor& b) {
  if (!a.defined()) {
    a = b;
    return;
  }
  add_inplace(a, b);
}

void axpy(double alpha, const Tensor& x, Tensor& y) {
  LINEA_ON_CUDA(x, axpy(alpha, x, y));
  const char* op = "axpy";
  cpu::check_float(x, op, "x");
  cpu::check_same_shape(y, x, op, "y", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const T a = static_cast<T>(alpha);
    for (int64_t i = 0, n = x.numel(); i < n; ++i) yp[i] += a * xp[i];
  });
}

void scale(Tensor& x, double alpha) {
  LINEA_ON_CUDA(x, scale(x, alpha));
  cpu::check_float(x, "scale", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* xp = x.data<T>();
    const T a = static_cast<T>(alpha);
    for (int64_t i = 0, n = x.numel(); i < n; ++i) xp[i] *= a;
  });
}

double sum_squares(const Tensor& x) {
  LINEA_ON_CUDA(x, sum_squares(x));
  cpu::check_float(x, "sum_squares", "x");
  return cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const int64_t n = x.numel();
    // Four independent partial sums: without -ffast-math the compiler keeps one sum strictly
    // sequential, and the dependency chain, not the loads, would set the speed.
    double s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      for (int k = 0; k < 4; ++k) s[k] += static_cast<double>(xp[i + k]) * xp[i + k];
    }
    for (; i < n; ++i) s[0] += static_cast<double>(xp[i]) * xp[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
  });
}

void sum_squares_into(const Tensor& x, Tensor& sums, int64_t index) {
  LINEA_ON_CUDA(x, sum_squares_into(x, sums, index));
  LINEA_CHECK(sums.defined() && sums.dtype() == DType::kF64 && sums.device().is_cpu() &&
              index >= 0 && index < sums.numel())
      << "sum_squares_into: sums must be an f64 CPU tensor with an entry " << index;
  sums.data<double>()[index] = sum_squares(x);
}

bool all_finite(const Tensor& x) {
  LINEA_ON_CUDA(x, all_finite(x));
  cpu::check_float(x, "all_finite", "x");
  return cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) {
      if (!std::isfinite(xp[i])) return false;
    }
    return true;
  });
}

}  // namespace linea::kernels
