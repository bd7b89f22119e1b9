#include "core/modules/mixers/decay_ops.h"

#include "core/tensor/dispatch.h"

namespace linea::decay_ops {
namespace {

void check_float(const Tensor& t, const char* op) {
  LINEA_CHECK(t.defined() && t.device().is_cpu() &&
              (t.dtype() == DType::kF32 || t.dtype() == DType::kF64))
      << op << ": needs a defined f32/f64 CPU tensor";
}

}  // namespace

Tensor act_forward(kernels::Activation a, const Tensor& x) {
  if (a == kernels::Activation::kIdentity) return x;
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  kernels::activation_forward(a, x, y);
  return y;
}

Tensor act_backward(kernels::Activation a, const Tensor& x, const Tensor& dy) {
  if (a == kernels::Activation::kIdentity) return dy;
  Tensor dx = Tensor::empty(x.shape(), x.dtype());
  kernels::activation_backward(a, x, dy, dx);
  return dx;
}

void add_bias(Tensor& y, const Tensor& b) {
  check_float(y, "add_bias");
  LINEA_CHECK(b.ndim() == 1 && b.dim(0) == y.dim(-1) && b.dtype() == y.dtype())
      << "add_bias: bias " << shape_str(b.shape()) << " for " << shape_str(y.shape());
  dispatch_float(y.dtype(), [&](auto tag) {
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
  dispatch_float(dy.dtype(), [&](auto tag) {
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
  dispatch_float(t.dtype(), [&](auto tag) {
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
  dispatch_float(dst.dtype(), [&](auto tag) {
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

}  // namespace linea::decay_ops
