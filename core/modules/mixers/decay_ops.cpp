#include "core/modules/mixers/decay_ops.h"

#include <cmath>

#include "kernels/sequence.h"
#include "kernels/short_conv.h"

namespace linea::decay_ops {
namespace {

void check_float(const Tensor& t, const char* op) {
  LINEA_CHECK(t.defined() && t.device().is_cpu() &&
              (t.dtype() == DType::kF32 || t.dtype() == DType::kF64))
      << op << ": needs a defined f32/f64 CPU tensor";
}

void check_same(const Tensor& a, const Tensor& b, const char* op) {
  check_float(a, op);
  LINEA_CHECK(a.dtype() == b.dtype() && a.shape() == b.shape())
      << op << ": " << shape_str(a.shape()) << " " << dtype_name(a.dtype()) << " vs "
      << shape_str(b.shape()) << " " << dtype_name(b.dtype());
}

// Runs f(T{}) for the tensor's element type.
template <typename F>
void with_float(DType dt, F&& f) {
  if (dt == DType::kF32)
    f(float{});
  else
    f(double{});
}

// exp(-x) overflows to inf for very negative x, which still gives the limit 0.
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// log sigmoid(x) = -softplus(-x), written so that neither branch overflows.
double log_sigmoid(double x) {
  return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}

double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }

double act(Act a, double x) {
  switch (a) {
    case Act::kIdentity:
      return x;
    case Act::kSilu:
      return x * sigmoid(x);
    case Act::kSigmoid:
      return sigmoid(x);
  }
  return x;
}

double act_grad(Act a, double x) {
  switch (a) {
    case Act::kIdentity:
      return 1;
    case Act::kSilu: {
      const double s = sigmoid(x);
      return s * (1 + x * (1 - s));
    }
    case Act::kSigmoid: {
      const double s = sigmoid(x);
      return s * (1 - s);
    }
  }
  return 1;
}

// out[i] = f(in_0[i], in_1[i], ...) over same-shaped tensors.
template <typename F>
Tensor map1(const Tensor& x, const char* op, F&& f) {
  check_float(x, op);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  with_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i) yp[i] = static_cast<T>(f(double(xp[i])));
  });
  return y;
}

template <typename F>
Tensor map2(const Tensor& x, const Tensor& z, const char* op, F&& f) {
  check_same(x, z, op);
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  with_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* zp = z.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0, n = x.numel(); i < n; ++i)
      yp[i] = static_cast<T>(f(double(xp[i]), double(zp[i])));
  });
  return y;
}

}  // namespace

Tensor act_forward(Act a, const Tensor& x) {
  if (a == Act::kIdentity) return x;
  return map1(x, "act_forward", [a](double v) { return act(a, v); });
}

Tensor act_backward(Act a, const Tensor& x, const Tensor& dy) {
  if (a == Act::kIdentity) return dy;
  return map2(x, dy, "act_backward", [a](double v, double d) { return d * act_grad(a, v); });
}

Tensor gate_forward(Act a, const Tensor& g, const Tensor& n) {
  return map2(g, n, "gate_forward", [a](double gv, double nv) { return nv * act(a, gv); });
}

void gate_backward(Act a, const Tensor& g, const Tensor& n, const Tensor& dy, Tensor& dg,
                   Tensor& dn) {
  const char* op = "gate_backward";
  check_same(g, n, op);
  check_same(g, dy, op);
  dg = Tensor::empty(g.shape(), g.dtype());
  dn = Tensor::empty(g.shape(), g.dtype());
  with_float(g.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *gp = g.data<T>(), *np = n.data<T>(), *dyp = dy.data<T>();
    T *dgp = dg.data<T>(), *dnp = dn.data<T>();
    for (int64_t i = 0, e = g.numel(); i < e; ++i) {
      const double gv = gp[i], d = dyp[i];
      dgp[i] = static_cast<T>(d * double(np[i]) * act_grad(a, gv));
      dnp[i] = static_cast<T>(d * act(a, gv));
    }
  });
}

Tensor log_sigmoid_forward(const Tensor& z, double inv_c) {
  return map1(z, "log_sigmoid_forward", [inv_c](double v) { return log_sigmoid(v) * inv_c; });
}

Tensor log_sigmoid_backward(const Tensor& z, const Tensor& dgk, double inv_c) {
  return map2(z, dgk, "log_sigmoid_backward",
              [inv_c](double v, double d) { return d * sigmoid(-v) * inv_c; });
}

void forget_gate_forward(const Tensor& z, double lower_bound, Tensor& gk, Tensor& k) {
  const double lb = lower_bound;
  // Without a bound log f = logsigmoid(z) exactly (no log of an underflowed sigmoid); with one,
  // f >= lb > 0 keeps the log finite.
  gk = map1(z, "forget_gate_forward", [lb](double v) {
    return lb == 0 ? log_sigmoid(v) : std::log(lb + (1 - lb) * sigmoid(v));
  });
  // 1 - f = (1 - lb)(1 - sigmoid(z)) = (1 - lb) sigmoid(-z): no cancellation when f is near 1.
  k = map1(z, "forget_gate_forward", [lb](double v) { return (1 - lb) * sigmoid(-v); });
}

Tensor forget_gate_backward(const Tensor& z, double lower_bound, const Tensor& dgk,
                            const Tensor& dk) {
  const char* op = "forget_gate_backward";
  check_same(z, dgk, op);
  check_same(z, dk, op);
  const double lb = lower_bound;
  Tensor dz = Tensor::empty(z.shape(), z.dtype());
  with_float(z.dtype(), [&](auto tag) {
    using T = decltype(tag);
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
  return dz;
}

Tensor softplus_forward(const Tensor& z) {
  return map1(z, "softplus_forward", [](double v) { return softplus(v); });
}

Tensor softplus_backward(const Tensor& z, const Tensor& dy) {
  return map2(z, dy, "softplus_backward", [](double v, double d) { return d * sigmoid(v); });
}

void add_bias(Tensor& y, const Tensor& b) {
  check_float(y, "add_bias");
  LINEA_CHECK(b.ndim() == 1 && b.dim(0) == y.dim(-1) && b.dtype() == y.dtype())
      << "add_bias: bias " << shape_str(b.shape()) << " for " << shape_str(y.shape());
  with_float(y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = b.dim(0), rows = y.numel() / C;
    T* yp = y.data<T>();
    const T* bp = b.data<T>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c) yp[r * C + c] += bp[c];
  });
}

void bias_backward(const Tensor& dy, Tensor& db) {
  check_float(dy, "bias_backward");
  LINEA_CHECK(db.ndim() == 1 && db.dim(0) == dy.dim(-1) && db.dtype() == dy.dtype())
      << "bias_backward: bias " << shape_str(db.shape()) << " for " << shape_str(dy.shape());
  with_float(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = db.dim(0), rows = dy.numel() / C;
    const T* dp = dy.data<T>();
    T* bp = db.data<T>();
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t r = 0; r < rows; ++r) acc += dp[r * C + c];
      bp[c] += static_cast<T>(acc);
    }
  });
}

Tensor columns(const Tensor& t, int64_t row0, int64_t c0, int64_t c1) {
  check_float(t, "columns");
  LINEA_CHECK(t.ndim() == 3 && 0 <= row0 && row0 <= t.dim(1) && 0 <= c0 && c0 <= c1 &&
              c1 <= t.dim(2))
      << "columns [" << c0 << ", " << c1 << ") from row " << row0 << " of " << shape_str(t.shape());
  const int64_t B = t.dim(0), T_ = t.dim(1), W = t.dim(2), w = c1 - c0;
  Tensor out = Tensor::empty({B, T_ - row0, w}, t.dtype());
  with_float(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = t.data<T>();
    T* dst = out.data<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = row0; r < T_; ++r)
        for (int64_t c = 0; c < w; ++c)
          dst[(b * (T_ - row0) + r - row0) * w + c] = src[(b * T_ + r) * W + c0 + c];
  });
  return out;
}

void add_columns(Tensor& dst, int64_t row0, int64_t c0, const Tensor& src) {
  check_float(dst, "add_columns");
  const int64_t B = dst.dim(0), T_ = dst.dim(1), W = dst.dim(2), w = src.dim(-1);
  LINEA_CHECK(dst.ndim() == 3 && src.dtype() == dst.dtype() && src.numel() == B * (T_ - row0) * w &&
              c0 + w <= W)
      << "add_columns " << shape_str(src.shape()) << " at row " << row0 << ", column " << c0
      << " of " << shape_str(dst.shape());
  with_float(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* s = src.data<T>();
    T* d = dst.data<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = row0; r < T_; ++r)
        for (int64_t c = 0; c < w; ++c)
          d[(b * T_ + r) * W + c0 + c] += s[(b * (T_ - row0) + r - row0) * w + c];
  });
}

Tensor concat_columns(const std::vector<Tensor>& parts) {
  LINEA_CHECK(!parts.empty()) << "concat_columns: nothing to join";
  const int64_t B = parts[0].dim(0), T_ = parts[0].dim(1);
  int64_t W = 0;
  for (const Tensor& p : parts) {
    LINEA_CHECK(p.dim(0) == B && p.dim(1) == T_ && p.dtype() == parts[0].dtype())
        << "concat_columns: " << shape_str(p.shape()) << " vs " << shape_str(parts[0].shape());
    W += p.numel() / (B * T_);
  }
  Tensor out = Tensor::zeros({B, T_, W}, parts[0].dtype());
  int64_t c0 = 0;
  for (const Tensor& p : parts) {
    const int64_t w = p.numel() / (B * T_);
    add_columns(out, 0, c0, p.view({B, T_, w}));
    c0 += w;
  }
  return out;
}

Tensor zero_rows_in_front(const Tensor& t, int64_t rows) {
  Shape s = t.shape();
  s[1] = rows;
  return kernels::concat_time(Tensor::zeros(s, t.dtype()), t);
}

ShortConv::ShortConv(const std::string& name, int64_t channels, int64_t kernel, bool silu,
                     DType dtype)
    : weight_(make_parameter(name + ".weight", {channels, kernel}, dtype, /*weight_decay=*/true)),
      silu_(silu) {}

void ShortConv::init(uint64_t seed) {
  init_normal(weight_, seed, 1.0 / std::sqrt(3.0 * double(kernel())));
}

Tensor ShortConv::forward(const Tensor& x) {
  const int64_t halo = kernel() - 1;
  LINEA_CHECK(x.ndim() == 3 && x.dim(1) > halo)
      << weight_.name << ": input " << shape_str(x.shape()) << " must carry " << halo
      << " halo rows and at least one token";
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  kernels::short_conv_forward(x, weight_.value, silu_, y);
  x_ = x;
  return kernels::slice_time(y, halo, x.dim(1));
}

Tensor ShortConv::backward(const Tensor& dy) {
  Tensor dx = Tensor::empty(x_.shape(), x_.dtype());
  kernels::short_conv_backward(x_, weight_.value, silu_, zero_rows_in_front(dy, kernel() - 1), dx,
                               weight_.grad);
  x_ = Tensor();
  return dx;
}

}  // namespace linea::decay_ops
