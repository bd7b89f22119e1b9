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

// gu [..., 2F] and t [..., F] with the same leading shape; returns F.
int64_t check_packed(const Tensor& gu, const Tensor& t, const char* op, const char* name) {
  LINEA_CHECK(gu.ndim() >= 1 && gu.dim(-1) % 2 == 0)
      << op << ": gu " << shape_str(gu.shape()) << " must end in an even 2F";
  Shape expect = gu.shape();
  expect.back() /= 2;
  LINEA_CHECK(t.shape() == expect) << op << ": " << name << " " << shape_str(t.shape())
                                   << " must be " << shape_str(expect) << " (gu's F)";
  return expect.back();
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

void swiglu_packed_forward(const Tensor& gu, Tensor& h) {
  LINEA_ON_CUDA(gu, swiglu_packed_forward(gu, h));
  const char* op = "swiglu_packed_forward";
  cpu::check_float(gu, op, "gu");
  cpu::check_like(h, gu, op, "h", "gu");
  const int64_t F = check_packed(gu, h, op, "h"), rows = F == 0 ? 0 : h.numel() / F;
  cpu::dispatch_float(gu.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = gu.data<T>();
    T* hp = h.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t f = 0; f < F; ++f) {
        const T gi = in[r * 2 * F + f];
        hp[r * F + f] = gi * sigmoid(gi) * in[r * 2 * F + F + f];
      }
    }
  });
}

void swiglu_packed_backward(const Tensor& gu, const Tensor& dh, Tensor& dgu) {
  LINEA_ON_CUDA(gu, swiglu_packed_backward(gu, dh, dgu));
  const char* op = "swiglu_packed_backward";
  cpu::check_float(gu, op, "gu");
  cpu::check_like(dh, gu, op, "dh", "gu");
  cpu::check_same_shape(dgu, gu, op, "dgu", "gu");
  const int64_t F = check_packed(gu, dh, op, "dh"), rows = F == 0 ? 0 : dh.numel() / F;
  cpu::dispatch_float(gu.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = gu.data<T>();
    const T* dhp = dh.data<T>();
    T* out = dgu.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t f = 0; f < F; ++f) {
        // Both reads before both writes: dgu may be gu.
        const T gi = in[r * 2 * F + f], ui = in[r * 2 * F + F + f], d = dhp[r * F + f];
        const T s = sigmoid(gi);
        out[r * 2 * F + f] = d * ui * s * (T(1) + gi * (T(1) - s));
        out[r * 2 * F + F + f] = d * gi * s;
      }
    }
  });
}

}  // namespace linea::kernels
