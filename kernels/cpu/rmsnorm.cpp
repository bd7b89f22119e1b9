#include "kernels/rmsnorm.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

// The weightless norm is a template flag rather than a branch or a buffer of ones, so the
// inner loops stay branch-free and allocation-free in both forms.
template <typename T, bool kWeighted>
void rmsnorm_forward_rows(const T* x, const T* w, double eps, int64_t rows, int64_t d, T* y,
                          T* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    // The backward sees the stored (rounded) rstd; use the same value here so that y and the
    // gradient describe one function even in f32.
    const T rs = static_cast<T>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    rstd[r] = rs;
    for (int64_t j = 0; j < d; ++j) {
      if constexpr (kWeighted) {
        yr[j] = xr[j] * rs * w[j];
      } else {
        yr[j] = xr[j] * rs;
      }
    }
  }
}

template <typename T, bool kWeighted>
void rmsnorm_backward_rows(const T* x, const T* w, const T* rstd, const T* dy, int64_t rows,
                           int64_t d, T* dx, T* dw) {
  // dw is a column sum over every row; f64 partial sums keep f32 exact enough at 1k+ rows.
  std::vector<double> dw_acc(kWeighted ? d : 0, 0.0);
  const double inv_d = 1.0 / static_cast<double>(d);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    const T* gr = dy + r * d;
    T* dxr = dx + r * d;
    const double rs = rstd[r];
    double dot = 0;  // sum_j x_hat_j * w_j * dy_j
    for (int64_t j = 0; j < d; ++j) {
      const double wg = kWeighted ? static_cast<double>(w[j]) * gr[j] : gr[j];
      dot += xr[j] * rs * wg;
    }
    const double mean = dot * inv_d;
    for (int64_t j = 0; j < d; ++j) {
      // Read both inputs before writing dx, so dx may share storage with x or dy.
      const double xh = xr[j] * rs;
      const double g = gr[j];
      if constexpr (kWeighted) dw_acc[j] += g * xh;
      const double wg = kWeighted ? static_cast<double>(w[j]) * g : g;
      dxr[j] = static_cast<T>(rs * (wg - xh * mean));
    }
  }
  if constexpr (kWeighted) {
    for (int64_t j = 0; j < d; ++j) dw[j] = static_cast<T>(dw[j] + dw_acc[j]);
  }
}

// x [..., D]; w [D] when defined; rstd with one entry per row.
void check_norm_args(const Tensor& x, const Tensor& w, const Tensor& rstd, const char* op) {
  cpu::check_float(x, op, "x");
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0)
      << op << ": x " << cpu::describe(x) << " needs a last dimension D > 0";
  const int64_t d = x.dim(-1);
  if (w.defined()) {
    cpu::check_like(w, x, op, "w", "x");
    LINEA_CHECK(w.ndim() == 1 && w.dim(0) == d)
        << op << ": w " << shape_str(w.shape()) << " must be [D] = [" << d << "] for x "
        << shape_str(x.shape());
  }
  cpu::check_like(rstd, x, op, "rstd", "x");
  LINEA_CHECK(rstd.numel() == x.numel() / d)
      << op << ": rstd " << shape_str(rstd.shape()) << " must hold one value per row of x "
      << shape_str(x.shape()) << " (" << x.numel() / d << " rows)";
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  LINEA_ON_CUDA(x, rmsnorm_forward(x, w, eps, y, rstd));
  const char* op = "rmsnorm_forward";
  check_norm_args(x, w, rstd, op);
  cpu::check_same_shape(y, x, op, "y", "x");
  LINEA_CHECK(eps >= 0) << op << ": eps = " << eps << " must be >= 0";
  const int64_t d = x.dim(-1), rows = x.numel() / d;
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (w.defined()) {
      rmsnorm_forward_rows<T, true>(x.data<T>(), w.data<T>(), eps, rows, d, y.data<T>(),
                                    rstd.data<T>());
    } else {
      rmsnorm_forward_rows<T, false>(x.data<T>(), nullptr, eps, rows, d, y.data<T>(),
                                     rstd.data<T>());
    }
  });
}

void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw) {
  LINEA_ON_CUDA(x, rmsnorm_backward(x, w, rstd, dy, dx, dw));
  const char* op = "rmsnorm_backward";
  check_norm_args(x, w, rstd, op);
  cpu::check_same_shape(dy, x, op, "dy", "x");
  cpu::check_same_shape(dx, x, op, "dx", "x");
  if (w.defined()) cpu::check_same_shape(dw, w, op, "dw", "w");
  const int64_t d = x.dim(-1), rows = x.numel() / d;
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (w.defined()) {
      rmsnorm_backward_rows<T, true>(x.data<T>(), w.data<T>(), rstd.data<T>(), dy.data<T>(), rows,
                                     d, dx.data<T>(), dw.data<T>());
    } else {
      rmsnorm_backward_rows<T, false>(x.data<T>(), nullptr, rstd.data<T>(), dy.data<T>(), rows, d,
                                      dx.data<T>(), nullptr);
    }
  });
}

}  // namespace linea::kernels
