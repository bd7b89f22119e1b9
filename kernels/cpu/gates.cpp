// CPU element-wise gates. The contract (formulas, gradient rules) is in kernels/gates.h.
#include "kernels/gates.h"

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

double sigmoid(double x) {
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1 + e);
}

double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

// log sigmoid(x) = -softplus(-x), written so that neither branch overflows.
double log_sigmoid(double x) {
  return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}

double act(Activation a, double x) {
  switch (a) {
    case Activation::kIdentity:
      return x;
    case Activation::kSilu:
      return x * sigmoid(x);
    case Activation::kSigmoid:
      return sigmoid(x);
  }
  return x;
}

double act_grad(Activation a, double x) {
  switch (a) {
    case Activation::kIdentity:
      return 1;
    case Activation::kSilu: {
      const double s = sigmoid(x);
      return s * (1 + x * (1 - s));
    }
    case Activation::kSigmoid: {
      const double s = sigmoid(x);
      return s * (1 - s);
    }
  }
  return 1;
}

// y[i] = f(x[i]), or f(x[i], z[i]), in f64 over same-shaped tensors of one dtype.
template <typename F>
void map1(const Tensor& x, Tensor& y, const char* op, const char* x_name, const char* y_name,
          F&& f) {
  check_float(x, op, x_name);
  check_same_shape(y, x, op, y_name, x_name);
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) py[i] = static_cast<T>(f(double(px[i])));
  });
}

template <typename F>
void map2(const Tensor& x, const Tensor& z, Tensor& y, const char* op, const char* x_name,
          const char* z_name, const char* y_name, F&& f) {
  check_float(x, op, x_name);
  check_same_shape(z, x, op, z_name, x_name);
  check_same_shape(y, x, op, y_name, x_name);
  dispatch_float(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *px = x.data<T>(), *pz = z.data<T>();
    T* py = y.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i)
      py[i] = static_cast<T>(f(double(px[i]), double(pz[i])));
  });
}

void check_head_params(const Tensor& a, const Tensor& p, const char* op, const char* name) {
  check_like(p, a, op, name, "a");
  LINEA_CHECK(p.ndim() == 1 && p.dim(0) == a.dim(-1))
      << op << ": " << name << " " << shape_str(p.shape()) << " must be [H] with H = " << a.dim(-1)
      << " (the last dimension of a)";
}

}  // namespace

void activation_forward(Activation a, const Tensor& x, Tensor& y) {
  LINEA_ON_CUDA(x, activation_forward(a, x, y));
  map1(x, y, "activation_forward", "x", "y", [a](double v) { return act(a, v); });
}

void activation_backward(Activation a, const Tensor& x, const Tensor& dy, Tensor& dx) {
  LINEA_ON_CUDA(x, activation_backward(a, x, dy, dx));
  map2(x, dy, dx, "activation_backward", "x", "dy", "dx",
       [a](double v, double d) { return d * act_grad(a, v); });
}

void output_gate_forward(Activation a, const Tensor& g, const Tensor& n, Tensor& y) {
  LINEA_ON_CUDA(g, output_gate_forward(a, g, n, y));
  map2(g, n, y, "output_gate_forward", "g", "n", "y",
       [a](double gv, double nv) { return nv * act(a, gv); });
}

void output_gate_backward(Activation a, const Tensor& g, const Tensor& n, const Tensor& dy,
                          Tensor& dg, Tensor& dn) {
  LINEA_ON_CUDA(g, output_gate_backward(a, g, n, dy, dg, dn));
  const char* op = "output_gate_backward";
  check_float(g, op, "g");
  check_same_shape(n, g, op, "n", "g");
  check_same_shape(dy, g, op, "dy", "g");
  check_same_shape(dg, g, op, "dg", "g");
  check_same_shape(dn, g, op, "dn", "g");
  dispatch_float(g.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *gp = g.data<T>(), *np = n.data<T>(), *dyp = dy.data<T>();
    T *dgp = dg.data<T>(), *dnp = dn.data<T>();
    for (int64_t i = 0, e = g.numel(); i < e; ++i) {
      const double gv = gp[i], d = dyp[i];
      dgp[i] = static_cast<T>(d * double(np[i]) * act_grad(a, gv));
      dnp[i] = static_cast<T>(d * act(a, gv));
    }
  });
}

void log_sigmoid_decay_forward(const Tensor& z, double normalizer, Tensor& gk) {
  LINEA_ON_CUDA(z, log_sigmoid_decay_forward(z, normalizer, gk));
  const double c = normalizer;
  map1(z, gk, "log_sigmoid_decay_forward", "z", "gk", [c](double v) { return log_sigmoid(v) / c; });
}

void log_sigmoid_decay_backward(const Tensor& z, const Tensor& dgk, double normalizer, Tensor& dz) {
  LINEA_ON_CUDA(z, log_sigmoid_decay_backward(z, dgk, normalizer, dz));
  const double c = normalizer;
  map2(z, dgk, dz, "log_sigmoid_decay_backward", "z", "dgk", "dz",
       [c](double v, double d) { return d * sigmoid(-v) / c; });
}

void forget_gate_forward(const Tensor& z, double lower_bound, Tensor& gk, Tensor& k) {
  LINEA_ON_CUDA(z, forget_gate_forward(z, lower_bound, gk, k));
  const double lb = lower_bound;
  // Without a bound log f = logsigmoid(z) exactly (no log of an underflowed sigmoid); with one,
  // f >= lb > 0 keeps the log finite.
  map1(z, gk, "forget_gate_forward", "z", "gk",
       [lb](double v) { return lb == 0 ? log_sigmoid(v) : std::log(lb + (1 - lb) * sigmoid(v)); });
  // 1 - f = (1 - lb)(1 - sigmoid(z)) = (1 - lb) sigmoid(-z): no cancellation when f is near 1.
  map1(z, k, "forget_gate_forward", "z", "k", [lb](double v) { return (1 - lb) * sigmoid(-v); });
}

void forget_gate_backward(const Tensor& z, double lower_bound, const Tensor& dgk, const Tensor& dk,
                          Tensor& dz) {
  LINEA_ON_CUDA(z, forget_gate_backward(z, lower_bound, dgk, dk, dz));
  const char* op = "forget_gate_backward";
  check_float(z, op, "z");
  check_same_shape(dgk, z, op, "dgk", "z");
  check_same_shape(dk, z, op, "dk", "z");
  check_same_shape(dz, z, op, "dz", "z");
  const double lb = lower_bound;
  dispatch_float(z.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *zp = z.data<T>(), *dgp = dgk.data<T>(), *dkp = dk.data<T>();
    T* dzp = dz.data<T>();
    for (int64_t i = 0, n = z.numel(); i < n; ++i) {
      const double s = sigmoid(zp[i]), sm = sigmoid(-double(zp[i]));
      const double df = (1 - lb) * s * sm;  // df/dz
      // dlog f/dz = df / f; for lb = 0 it is sigmoid(-z), exact where f underflows.
      const double dlogf = lb == 0 ? sm : df / (lb + (1 - lb) * s);
      dzp[i] = static_cast<T>(double(dgp[i]) * dlogf - double(dkp[i]) * df);
    }
  });
}

void softplus_forward(const Tensor& z, Tensor& y) {
  LINEA_ON_CUDA(z, softplus_forward(z, y));
  map1(z, y, "softplus_forward", "z", "y", [](double v) { return softplus(v); });
}

void softplus_backward(const Tensor& z, const Tensor& dy, Tensor& dz) {
  LINEA_ON_CUDA(z, softplus_backward(z, dy, dz));
  map2(z, dy, dz, "softplus_backward", "z", "dy", "dz",
       [](double v, double d) { return d * sigmoid(v); });
}

void delta_beta_forward(const Tensor& b, double scale, Tensor& beta) {
  LINEA_ON_CUDA(b, delta_beta_forward(b, scale, beta));
  const char* op = "delta_beta_forward";
  check_float(b, op, "b");
  check_same_shape(beta, b, op, "beta", "b");
  dispatch_float(b.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* pb = b.data<T>();
    T* py = beta.data<T>();
    for (int64_t i = 0; i < b.numel(); ++i) py[i] = static_cast<T>(scale * sigmoid(pb[i]));
  });
}

void delta_beta_backward(const Tensor& b, double scale, const Tensor& dbeta, Tensor& db) {
  LINEA_ON_CUDA(b, delta_beta_backward(b, scale, dbeta, db));
  const char* op = "delta_beta_backward";
  check_float(b, op, "b");
  check_same_shape(dbeta, b, op, "dbeta", "b");
  check_same_shape(db, b, op, "db", "b");
  dispatch_float(b.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T *pb = b.data<T>(), *pd = dbeta.data<T>();
    T* px = db.data<T>();
    for (int64_t i = 0; i < b.numel(); ++i) {
      const double s = sigmoid(pb[i]);
      px[i] = static_cast<T>(pd[i] * scale * s * (1 - s));
    }
  });
}

void delta_log_decay_forward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                             Tensor& g) {
  LINEA_ON_CUDA(a, delta_log_decay_forward(a, A_log, dt_bias, g));
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
        pg[i] = static_cast<T>(-std::exp(double(pA[h])) * softplus(double(pa[i]) + pdt[h]));
      }
  });
}

void delta_log_decay_backward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                              const Tensor& dg, Tensor& da, Tensor& dA_log, Tensor& d_dt_bias) {
  LINEA_ON_CUDA(a, delta_log_decay_backward(a, A_log, dt_bias, dg, da, dA_log, d_dt_bias));
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
        const double d_a = -pdg[i] * A * sigmoid(z);
        pda[i] = static_cast<T>(d_a);
        sum_dt[h] += d_a;
        sum_A[h] += pdg[i] * (-A * softplus(z));
      }
    for (int64_t h = 0; h < H; ++h) {
      pdA[h] += static_cast<T>(sum_A[h]);
      pddt[h] += static_cast<T>(sum_dt[h]);
    }
  });
}

}  // namespace linea::kernels
