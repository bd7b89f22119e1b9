#include "core/modules/mixers/decay_ops.h"

#include "kernels/columns.h"

namespace linea::decay_ops {

Tensor act_forward(kernels::Activation a, const Tensor& x) {
  if (a == kernels::Activation::kIdentity) return x;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::activation_forward(a, x, y);
  return y;
}

Tensor act_backward(kernels::Activation a, const Tensor& x, const Tensor& dy) {
  if (a == kernels::Activation::kIdentity) return dy;
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernels::activation_backward(a, x, dy, dx);
  return dx;
}

void add_bias(Tensor& y, const Tensor& b) { kernels::add_bias(y, b); }

void bias_backward(const Tensor& dy, Tensor& db) { kernels::bias_backward(dy, db); }

Tensor columns(const Tensor& t, int64_t row0, int64_t c0, int64_t c1) {
  LINEA_CHECK(t.ndim() == 3 && 0 <= row0 && row0 <= t.dim(1) && 0 <= c0 && c0 <= c1 &&
              c1 <= t.dim(2))
      << "columns [" << c0 << ", " << c1 << ") from row " << row0 << " of " << shape_str(t.shape());
  Tensor out = Tensor::empty({t.dim(0), t.dim(1) - row0, c1 - c0}, t.dtype(), t.device());
  kernels::gather_columns(t, row0, c0, out);
  return out;
}

void add_columns(Tensor& dst, int64_t row0, int64_t c0, const Tensor& src) {
  LINEA_CHECK(dst.ndim() == 3 && 0 <= row0 && row0 <= dst.dim(1) &&
              src.numel() == dst.dim(0) * (dst.dim(1) - row0) * src.dim(-1))
      << "add_columns " << shape_str(src.shape()) << " at row " << row0 << ", column " << c0
      << " of " << shape_str(dst.shape());
  kernels::scatter_add_columns(dst, row0, c0,
                               src.view({dst.dim(0), dst.dim(1) - row0, src.dim(-1)}));
}

Tensor concat_columns(const std::vector<Tensor>& parts) {
  LINEA_CHECK(!parts.empty()) << "concat_columns: nothing to join";
  const int64_t B = parts[0].dim(0), T_ = parts[0].dim(1);
  int64_t W = 0;
  for (const Tensor& p : parts) {
    LINEA_CHECK(p.dim(0) == B && p.dim(1) == T_ && p.dtype() == parts[0].dtype() &&
                p.device() == parts[0].device())
        << "concat_columns: " << shape_str(p.shape()) << " " << dtype_name(p.dtype()) << " on "
        << p.device().str() << " vs " << shape_str(parts[0].shape()) << " "
        << dtype_name(parts[0].dtype()) << " on " << parts[0].device().str();
    W += p.numel() / (B * T_);
  }
  Tensor out = Tensor::zeros({B, T_, W}, parts[0].dtype(), parts[0].device());
  int64_t c0 = 0;
  for (const Tensor& p : parts) {
    const int64_t w = p.numel() / (B * T_);
    kernels::scatter_add_columns(out, 0, c0, p.view({B, T_, w}));
    c0 += w;
  }
  return out;
}

}  // namespace linea::decay_ops
