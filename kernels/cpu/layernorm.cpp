// CPU LayerNorm. The contract (formula, gradient rule) is in kernels/layernorm.h.
#include "kernels/layernorm.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

Shape row_shape(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

void check_rows(const Tensor& t, const Tensor& x, const char* op, const char* name) {
  cpu::check_like(t, x, op, name, "x");
  LINEA_CHECK(t.shape() == row_shape(x)) << op << ": " << name << " " << shape_str(t.shape())
                                         << " must be " << shape_str(row_shape(x));
}

void check_affine(const Tensor& t, const Tensor& x, const char* op, const char* name) {
  if (!t.defined()) return;
  cpu::check_like(t, x, op, name, "x");
  LINEA_CHECK(t.ndim() == 1 && t.dim(0) == x.dim(-1))
      << op << ": " << name << " " << shape_str(t.shape()) << " must be [" << x.dim(-1) << "]";
}

template <typename T>
void forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
             Tensor& mean, Tensor& rstd) {
  const int64_t D = x.dim(-1), rows = x.numel() / D;
  const T* px = x.data<T>();
  const T* pg = gamma.defined() ? gamma.data<T>() : nullptr;
  const T* pb = beta.defined() ? beta.data<T>() : nullptr;
  T *py = y.data<T>(), *pm = mean.data<T>(), *pr = rstd.data<T>();
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = px + r * D;
    double mu = 0;
    for (int64_t i = 0; i < D; ++i) mu += xr[i];
    mu /= D;
    double var = 0;
    for (int64_t i = 0; i < D; ++i) var += (xr[i] - mu) * (xr[i] - mu);
    const double rs = 1.0 / std::sqrt(var / D + eps);
    pm[r] = static_cast<T>(mu);
    pr[r] = static_cast<T>(rs);
    for (int64_t i = 0; i < D; ++i) {
      double v = (xr[i] - mu) * rs;
      if (pg) v *= pg[i];
      if (pb) v += pb[i];
      py[r * D + i] = static_cast<T>(v);
    }
  }
}

template <typename T>
void backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
              const Tensor& dy, Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
  const int64_t D = x.dim(-1), rows = x.numel() / D;
  const T *px = x.data<T>(), *pm = mean.data<T>(), *pr = rstd.data<T>(), *pdy = dy.data<T>();
  const T* pg = gamma.defined() ? gamma.data<T>() : nullptr;
  T* pdx = dx.data<T>();
  // Parameter gradients summed over all rows in f64, added once at the end.
  std::vector<double> dg(dgamma.defined() ? D : 0, 0.0), db(dbeta.defined() ? D : 0, 0.0);
  std::vector<double> xhat(D), g(D);
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = px + r * D, *dyr = pdy + r * D;
    const double mu = pm[r], rs = pr[r];
    double mean_g = 0, mean_gx = 0;
    for (int64_t i = 0; i < D; ++i) {
      xhat[i] = (xr[i] - mu) * rs;
      g[i] = pg ? dyr[i] * static_cast<double>(pg[i]) : dyr[i];
      mean_g += g[i];
      mean_gx += g[i] * xhat[i];
      if (!dg.empty()) dg[i] += dyr[i] * xhat[i];
      if (!db.empty()) db[i] += dyr[i];
    }
    mean_g /= D;
    mean_gx /= D;
    for (int64_t i = 0; i < D; ++i)
      pdx[r * D + i] = static_cast<T>(rs * (g[i] - mean_g - xhat[i] * mean_gx));
  }
  for (size_t i = 0; i < dg.size(); ++i) dgamma.data<T>()[i] += static_cast<T>(dg[i]);
  for (size_t i = 0; i < db.size(); ++i) dbeta.data<T>()[i] += static_cast<T>(db[i]);
}

}  // namespace

void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                       Tensor& y, Tensor& mean, Tensor& rstd) {
  LINEA_ON_CUDA(x, layernorm_forward(x, gamma, beta, eps, y, mean, rstd));
  const char* op = "layernorm_forward";
  cpu::check_float(x, op, "x");
  LINEA_CHECK(x.ndim() >= 1 && x.dim(-1) > 0) << op << ": x " << shape_str(x.shape());
  LINEA_CHECK(eps >= 0) << op << ": eps " << eps << " must be >= 0";
  check_affine(gamma, x, op, "gamma");
  check_affine(beta, x, op, "beta");
  cpu::check_same_shape(y, x, op, "y", "x");
  check_rows(mean, x, op, "mean");
  check_rows(rstd, x, op, "rstd");
  cpu::dispatch_float(
      x.dtype(), [&](auto tag) { forward<decltype(tag)>(x, gamma, beta, eps, y, mean, rstd); });
}

void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                        Tensor& dbeta) {
  LINEA_ON_CUDA(x, layernorm_backward(x, gamma, mean, rstd, dy, dx, dgamma, dbeta));
  const char* op = "layernorm_backward";
  cpu::check_float(x, op, "x");
  check_affine(gamma, x, op, "gamma");
  check_affine(dgamma, x, op, "dgamma");
  check_affine(dbeta, x, op, "dbeta");
  check_rows(mean, x, op, "mean");
  check_rows(rstd, x, op, "rstd");
  cpu::check_same_shape(dy, x, op, "dy", "x");
  cpu::check_same_shape(dx, x, op, "dx", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    backward<decltype(tag)>(x, gamma, mean, rstd, dy, dx, dgamma, dbeta);
  });
}

}  // namespace linea::kernels
