// CPU steps of Gated Slot Attention (kernels/gsa.h), in f64.
#include "kernels/gsa.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

void check_rows(const Tensor& x, const char* op, const char* name) {
  cpu::check_float(x, op, name);
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0)
      << op << ": " << name << " " << shape_str(x.shape()) << " needs a last dimension M > 0";
}

}  // namespace

void gsa_slot_write_forward(const Tensor& log_alpha, Tensor& w) {
  LINEA_ON_CUDA(log_alpha, gsa_slot_write_forward(log_alpha, w));
  const char* op = "gsa_slot_write_forward";
  cpu::check_float(log_alpha, op, "log_alpha");
  cpu::check_same_shape(w, log_alpha, op, "w", "log_alpha");
  cpu::dispatch_float(log_alpha.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* la = log_alpha.data<T>();
    T* pw = w.data<T>();
    for (int64_t i = 0, n = w.numel(); i < n; ++i)
      pw[i] = static_cast<T>(-std::expm1(double(la[i])));
  });
}

void gsa_slot_write_backward(const Tensor& log_alpha, const Tensor& d_log_alpha, const Tensor& d_w,
                             Tensor& d_total) {
  LINEA_ON_CUDA(log_alpha, gsa_slot_write_backward(log_alpha, d_log_alpha, d_w, d_total));
  const char* op = "gsa_slot_write_backward";
  cpu::check_float(log_alpha, op, "log_alpha");
  cpu::check_same_shape(d_log_alpha, log_alpha, op, "d_log_alpha", "log_alpha");
  cpu::check_same_shape(d_w, log_alpha, op, "d_w", "log_alpha");
  cpu::check_same_shape(d_total, log_alpha, op, "d_total", "log_alpha");
  cpu::dispatch_float(log_alpha.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *la = log_alpha.data<T>(), *dla = d_log_alpha.data<T>(), *dw = d_w.data<T>();
    T* out = d_total.data<T>();
    for (int64_t i = 0, n = d_total.numel(); i < n; ++i)
      out[i] = static_cast<T>(double(dla[i]) - std::exp(double(la[i])) * double(dw[i]));
  });
}

void gsa_slot_softmax_forward(const Tensor& s, Tensor& p) {
  LINEA_ON_CUDA(s, gsa_slot_softmax_forward(s, p));
  const char* op = "gsa_slot_softmax_forward";
  check_rows(s, op, "s");
  cpu::check_same_shape(p, s, op, "p", "s");
  const int64_t n = s.dim(-1), rows = s.numel() / n;
  cpu::dispatch_float(s.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* ps = s.data<T>();
    T* pp = p.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      double mx = ps[r * n];
      for (int64_t j = 1; j < n; ++j) mx = std::max(mx, double(ps[r * n + j]));
      double z = 0;
      for (int64_t j = 0; j < n; ++j) z += std::exp(double(ps[r * n + j]) - mx);
      for (int64_t j = 0; j < n; ++j) pp[r * n + j] = T(std::exp(double(ps[r * n + j]) - mx) / z);
    }
  });
}

void gsa_slot_softmax_backward(const Tensor& p, const Tensor& dp, Tensor& ds) {
  LINEA_ON_CUDA(p, gsa_slot_softmax_backward(p, dp, ds));
  const char* op = "gsa_slot_softmax_backward";
  check_rows(p, op, "p");
  cpu::check_same_shape(dp, p, op, "dp", "p");
  cpu::check_same_shape(ds, p, op, "ds", "p");
  const int64_t n = p.dim(-1), rows = p.numel() / n;
  cpu::dispatch_float(p.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pp = p.data<T>();
    const T* pd = dp.data<T>();
    T* po = ds.data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      double dot = 0;
      for (int64_t j = 0; j < n; ++j) dot += double(pp[r * n + j]) * pd[r * n + j];
      for (int64_t j = 0; j < n; ++j)
        po[r * n + j] = T(double(pp[r * n + j]) * (double(pd[r * n + j]) - dot));
    }
  });
}

}  // namespace linea::kernels
