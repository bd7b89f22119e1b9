// CPU steps of Mamba2's SSD layer (kernels/ssd.h): loops over rows and heads, sums in f64.
#include "kernels/ssd.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

struct Dims {
  int64_t rows, H, P;
};

// x [B, T, H, P], dt [B, T, H], A_log / D [H], all of x's dtype.
Dims check_x_dt(const Tensor& x, const Tensor& dt, const char* op) {
  cpu::check_float(x, op, "x");
  cpu::check_like(dt, x, op, "dt", "x");
  LINEA_CHECK(x.ndim() == 4 && dt.shape() == Shape({x.dim(0), x.dim(1), x.dim(2)}))
      << op << ": x " << shape_str(x.shape()) << " and dt " << shape_str(dt.shape())
      << " must be [B, T, H, P] and [B, T, H]";
  return {x.dim(0) * x.dim(1), x.dim(2), x.dim(3)};
}

void check_head_vector(const Tensor& t, const Tensor& x, const Dims& d, const char* op,
                       const char* name) {
  cpu::check_like(t, x, op, name, "x");
  LINEA_CHECK(t.shape() == Shape({d.H}))
      << op << ": " << name << " " << shape_str(t.shape()) << " must be [H] = [" << d.H << "]";
}

}  // namespace

void ssd_heads_broadcast(const Tensor& m, Tensor& out) {
  LINEA_ON_CUDA(m, ssd_heads_broadcast(m, out));
  const char* op = "ssd_heads_broadcast";
  cpu::check_float(m, op, "m");
  cpu::check_like(out, m, op, "out", "m");
  LINEA_CHECK(m.ndim() == 3 && out.ndim() == 4 && out.dim(0) == m.dim(0) &&
              out.dim(1) == m.dim(1) && out.dim(3) == m.dim(2))
      << op << ": m " << shape_str(m.shape()) << ", out " << shape_str(out.shape())
      << " must be [B, T, N] and [B, T, H, N]";
  const int64_t rows = m.dim(0) * m.dim(1), H = out.dim(2), N = m.dim(2);
  cpu::dispatch_float(m.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* s = m.data<T>();
    T* d = out.data<T>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t n = 0; n < N; ++n) d[(r * H + h) * N + n] = s[r * N + n];
  });
}

void ssd_heads_sum(const Tensor& d, Tensor& out) {
  LINEA_ON_CUDA(d, ssd_heads_sum(d, out));
  const char* op = "ssd_heads_sum";
  cpu::check_float(d, op, "d");
  cpu::check_like(out, d, op, "out", "d");
  LINEA_CHECK(d.ndim() == 4 && out.shape() == Shape({d.dim(0), d.dim(1), d.dim(3)}))
      << op << ": d " << shape_str(d.shape()) << ", out " << shape_str(out.shape())
      << " must be [B, T, H, N] and [B, T, N]";
  const int64_t rows = d.dim(0) * d.dim(1), H = d.dim(2), N = d.dim(3);
  cpu::dispatch_float(d.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* s = d.data<T>();
    T* o = out.data<T>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (int64_t h = 0; h < H; ++h) acc += s[(r * H + h) * N + n];
        o[r * N + n] = static_cast<T>(acc);
      }
  });
}

void ssd_discretise(const Tensor& x, const Tensor& dt, const Tensor& A_log, Tensor& g, Tensor& v) {
  LINEA_ON_CUDA(x, ssd_discretise(x, dt, A_log, g, v));
  const char* op = "ssd_discretise";
  const Dims s = check_x_dt(x, dt, op);
  check_head_vector(A_log, x, s, op, "A_log");
  cpu::check_same_shape(g, dt, op, "g", "dt");
  cpu::check_same_shape(v, x, op, "v", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data<T>(), *dtp = dt.data<T>(), *ap = A_log.data<T>();
    T *gp = g.data<T>(), *vp = v.data<T>();
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t h = 0; h < s.H; ++h) {
        const double d = dtp[r * s.H + h];
        gp[r * s.H + h] = static_cast<T>(-std::exp(double(ap[h])) * d);
        for (int64_t p = 0; p < s.P; ++p)
          vp[(r * s.H + h) * s.P + p] = static_cast<T>(xp[(r * s.H + h) * s.P + p] * d);
      }
  });
}

void ssd_add_skip(const Tensor& x, const Tensor& D, Tensor& o) {
  LINEA_ON_CUDA(x, ssd_add_skip(x, D, o));
  const char* op = "ssd_add_skip";
  cpu::check_float(x, op, "x");
  LINEA_CHECK(x.ndim() == 4) << op << ": x " << shape_str(x.shape()) << " must be [B, T, H, P]";
  const Dims s{x.dim(0) * x.dim(1), x.dim(2), x.dim(3)};
  check_head_vector(D, x, s, op, "D");
  cpu::check_same_shape(o, x, op, "o", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data<T>(), *Dp = D.data<T>();
    T* op_ = o.data<T>();
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t i = (r * s.H + h) * s.P, e = i + s.P; i < e; ++i) op_[i] += Dp[h] * xp[i];
  });
}

void ssd_discretise_backward(const Tensor& x, const Tensor& dt, const Tensor& g,
                             const Tensor& A_log, const Tensor& D, const Tensor& dv,
                             const Tensor& dg, const Tensor& d_o, Tensor& dx, Tensor& ddt,
                             Tensor& dA_log, Tensor& dD) {
  LINEA_ON_CUDA(x, ssd_discretise_backward(x, dt, g, A_log, D, dv, dg, d_o, dx, ddt, dA_log, dD));
  const char* op = "ssd_discretise_backward";
  const Dims s = check_x_dt(x, dt, op);
  check_head_vector(A_log, x, s, op, "A_log");
  check_head_vector(D, x, s, op, "D");
  check_head_vector(dA_log, x, s, op, "dA_log");
  check_head_vector(dD, x, s, op, "dD");
  cpu::check_same_shape(g, dt, op, "g", "dt");
  cpu::check_same_shape(dg, dt, op, "dg", "dt");
  cpu::check_same_shape(ddt, dt, op, "ddt", "dt");
  cpu::check_same_shape(dv, x, op, "dv", "x");
  cpu::check_same_shape(d_o, x, op, "d_o", "x");
  cpu::check_same_shape(dx, x, op, "dx", "x");
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data<T>(), *dtp = dt.data<T>(), *gp = g.data<T>(), *ap = A_log.data<T>(),
            *Dp = D.data<T>(), *dvp = dv.data<T>(), *dgp = dg.data<T>(), *dop = d_o.data<T>();
    T *dxp = dx.data<T>(), *ddtp = ddt.data<T>(), *dap = dA_log.data<T>(), *dDp = dD.data<T>();
    std::vector<double> da(s.H, 0.0), dd(s.H, 0.0);
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t j = r * s.H + h;
        const double d = dtp[j];
        double acc = 0;
        for (int64_t i = j * s.P, e = i + s.P; i < e; ++i) {
          dxp[i] = static_cast<T>(double(dvp[i]) * d + double(Dp[h]) * dop[i]);
          acc += double(dvp[i]) * xp[i];
          dd[h] += double(dop[i]) * xp[i];
        }
        ddtp[j] = static_cast<T>(acc - std::exp(double(ap[h])) * dgp[j]);
        da[h] += double(dgp[j]) * gp[j];
      }
    for (int64_t h = 0; h < s.H; ++h) {
      dap[h] += static_cast<T>(da[h]);
      dDp[h] += static_cast<T>(dd[h]);
    }
  });
}

}  // namespace linea::kernels
