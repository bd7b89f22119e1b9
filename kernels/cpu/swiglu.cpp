#include "kernels/swiglu.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

// exp(-g) overflows to inf for very negative g, which still gives the right limit 0.
template <typename T>
T sigmoid(T g) {
  return T(1) / (T(1) + std::exp(-g));
}

void check_swiglu_inputs(const Tensor& g, const Tensor& u, const char* op) {
  cpu::check_float(g, op, "g");
  cpu::check_same_shape(u, g, op, "u", "g");
}

}  // namespace

void swiglu_forward(const Tensor& g, const Tensor& u, Tensor& h) {
  LINEA_ON_CUDA(g, swiglu_forward(g, u, h));
  const char* op = "swiglu_forward";
  check_swiglu_inputs(g, u, op);
  cpu::check_same_shape(h, g, op, "h", "g");
  cpu::dispatch_float(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* gp = g.data<T>();
    const T* up = u.data<T>();
    T* hp = h.data<T>();
    for (int64_t i = 0, n = g.numel(); i < n; ++i) {
      const T gi = gp[i];
      hp[i] = gi * sigmoid(gi) * up[i];
    }
  });
}

void swiglu_backward(const Tensor& g, const Tensor& u, const Tensor& dh, Tensor& dg, Tensor& du) {
  LINEA_ON_CUDA(g, swiglu_backward(g, u, dh, dg, du));
  const char* op = "swiglu_backward";
  check_swiglu_inputs(g, u, op);
  cpu::check_same_shape(dh, g, op, "dh", "g");
  cpu::check_same_shape(dg, g, op, "dg", "g");
  cpu::check_same_shape(du, g, op, "du", "g");
  cpu::dispatch_float(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* gp = g.data<T>();
    const T* up = u.data<T>();
    const T* dhp = dh.data<T>();
    T* dgp = dg.data<T>();
    T* dup = du.data<T>();
    for (int64_t i = 0, n = g.numel(); i < n; ++i) {
      // All reads happen before the writes, so dg/du may reuse the storage of g, u or dh.
      const T gi = gp[i], ui = up[i], d = dhp[i];
      const T s = sigmoid(gi);
      dgp[i] = d * ui * s * (T(1) + gi * (T(1) - s));
      dup[i] = d * gi * s;
    }
  });
}

}  // namespace linea::kernels
