#include "core/modules/mixers/short_conv.h"

#include <cmath>

#include "kernels/sequence.h"
#include "kernels/short_conv.h"

namespace linea {
namespace {

// t [B, T, ...] with `rows` zero rows in front.
Tensor zero_rows_in_front(const Tensor& t, int64_t rows) {
  Shape s = t.shape();
  s[1] = rows;
  return kernels::concat_time(Tensor::zeros(s, t.dtype(), t.device()), t);
}

}  // namespace

Tensor prepend_halo(const Tensor& x, const Tensor& halo, int64_t rows) {
  if (rows == 0) return x;
  if (!halo.defined()) return zero_rows_in_front(x, rows);
  const Shape want{x.dim(0), rows, x.dim(2)};
  LINEA_CHECK(halo.shape() == want)
      << "halo " << shape_str(halo.shape()) << ", expected " << shape_str(want);
  return kernels::concat_time(halo, x);
}

Tensor split_halo(const Tensor& d, int64_t rows, Tensor* d_halo) {
  if (rows == 0) return d;
  if (d_halo) *d_halo = kernels::slice_time(d, 0, rows);
  return kernels::slice_time(d, rows, d.dim(1));
}

Tensor short_conv_segment_forward(const Tensor& x_ext, const Tensor& w, bool silu) {
  Tensor y = Tensor::empty(x_ext.shape(), x_ext.dtype(), x_ext.device());
  kernels::short_conv_forward(x_ext, w, silu, y);
  const int64_t halo = w.dim(1) - 1;
  return halo > 0 ? kernels::slice_time(y, halo, x_ext.dim(1)) : y;
}

Tensor short_conv_segment_backward(const Tensor& x_ext, const Tensor& w, bool silu,
                                   const Tensor& dy, Tensor& dw) {
  // The dropped halo outputs received no gradient.
  const int64_t halo = w.dim(1) - 1;
  Tensor dx = Tensor::empty(x_ext.shape(), x_ext.dtype(), x_ext.device());
  kernels::short_conv_backward(x_ext, w, silu, halo > 0 ? zero_rows_in_front(dy, halo) : dy, dx,
                               dw);
  return dx;
}

ShortConv::ShortConv(const std::string& name, int64_t channels, int64_t kernel, bool silu,
                     DType dtype)
    : weight_(make_parameter(name + ".weight", {channels, kernel}, dtype, /*weight_decay=*/true)),
      silu_(silu) {}

void ShortConv::init(uint64_t seed) { init(seed, 1.0 / std::sqrt(3.0 * double(kernel()))); }

void ShortConv::init(uint64_t seed, double std) { init_normal(weight_, seed, std); }

Tensor ShortConv::forward(const Tensor& x_ext) {
  Tensor y = apply(x_ext);
  x_ = x_ext;
  return y;
}

Tensor ShortConv::backward(const Tensor& dy) {
  Tensor dx = apply_backward(x_, dy);
  x_ = Tensor();
  return dx;
}

Tensor ShortConv::apply(const Tensor& x_ext) const {
  const int64_t halo = kernel() - 1;
  LINEA_CHECK(x_ext.ndim() == 3 && x_ext.dim(1) > halo)
      << weight_.name << ": input " << shape_str(x_ext.shape()) << " must carry " << halo
      << " halo rows and at least one token";
  return short_conv_segment_forward(x_ext, weight_.value, silu_);
}

Tensor ShortConv::apply_backward(const Tensor& x_ext, const Tensor& dy) {
  return short_conv_segment_backward(x_ext, weight_.value, silu_, dy, weight_.grad);
}

}  // namespace linea
