// CPU delta-rule gates. The contract (formulas, gradient rules) is in kernels/delta_gates.h.
#include "kernels/delta_gates.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

using cpu::check_float;
using cpu::check_like;
using cpu::check_same_shape;
using cpu::dispatch_float;

double stable_sigmoid(double x) {
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1 + e);
}

double stable_softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

void check_head_params(const Tensor& a, const Tensor& p, const char* op, const char* name) {
  check_like(p, a, op, name, "a");
  LINEA_CHECK(p.ndim() == 1 && p.dim(0) == a.dim(-1))
      << op << ": " << name << " " << shape_str(p.shape()) << " must be [H] with H = " << a.dim(-1)
      << " (the last dimension of a)";
}

}  // namespace

void delta_beta_forward(const Tensor& b, double scale, Tensor& beta) {
  const char* op = "delta_beta_forward";
  check_float(b, op, "b");
  check_same_shape(beta, b, op, "beta", "b");
  dispatch_float(b.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* pb = b.data<T>();
    T* py = beta.data<T>();
    for (int64_t i = 0; i < b.numel(); ++i) py[i] = static_cast<T>(scale * stable_sigmoid(pb[i]));
  });
}

void delta_beta_backward(const Tensor& b, double scale, const Tensor& dbeta, Tensor& db) {
  const char* op = "delta_beta_backward";
  check_float(b, op, "b");
  check_same_shape(dbeta, b, op, "dbeta", "b");
  check_same_shape(db, b, op, "db", "b");
  dispatch_float(b.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *pb = b.data<T>(), *pd = dbeta.data<T>();
    T* px = db.data<T>();
    for (int64_t i = 0; i < b.numel(); ++i) {
      const double s = stable_sigmoid(pb[i]);
      px[i] = static_cast<T>(pd[i] * scale * s * (1 - s));
    }
  });
}

void delta_log_decay_forward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                             Tensor& g) {
  const char* op = "delta_log_decay_forward";
  check_float(a, op, "a");
  check_head_params(a, A_log, op, "A_log");
  check_head_params(a, dt_bias, op, "dt_bias");
  check_same_shape(g, a, op, "g", "a");
  dispatch_float(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t H = a.dim(-1), rows = a.numel() / H;
    const T *pa = a.data<T>(), *pA = A_log.data<T>(), *pdt = dt_bias.data<T>();
    T* pg = g.data<T>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t i = r * H + h;
        pg[i] = static_cast<T>(-std::exp(double(pA[h])) * stable_softplus(double(pa[i]) + pdt[h]));
      }
  });
}

void delta_log_decay_backward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                              const Tensor& dg, Tensor& da, Tensor& dA_log, Tensor& d_dt_bias) {
  const char* op = "delta_log_decay_backward";
  check_float(a, op, "a");
  check_head_params(a, A_log, op, "A_log");
  check_head_params(a, dt_bias, op, "dt_bias");
  check_same_shape(dg, a, op, "dg", "a");
  check_same_shape(da, a, op, "da", "a");
  check_head_params(a, dA_log, op, "dA_log");
  check_head_params(a, d_dt_bias, op, "d_dt_bias");
  dispatch_float(a.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const int64_t H = a.dim(-1), rows = a.numel() / H;
    const T *pa = a.data<T>(), *pA = A_log.data<T>(), *pdt = dt_bias.data<T>(), *pdg = dg.data<T>();
    T *pda = da.data<T>(), *pdA = dA_log.data<T>(), *pddt = d_dt_bias.data<T>();
    std::vector<double> sum_A(H, 0.0), sum_dt(H, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t i = r * H + h;
        const double A = std::exp(double(pA[h])), z = double(pa[i]) + pdt[h];
        const double d_a = -pdg[i] * A * stable_sigmoid(z);
        pda[i] = static_cast<T>(d_a);
        sum_dt[h] += d_a;
        sum_A[h] += pdg[i] * (-A * stable_softplus(z));
      }
    for (int64_t h = 0; h < H; ++h) {
      pdA[h] += static_cast<T>(sum_A[h]);
      pddt[h] += static_cast<T>(sum_dt[h]);
    }
  });
}

}  // namespace linea::kernels
