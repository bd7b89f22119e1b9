// CPU biases and column blocks. The contract is in kernels/columns.h.
#include "kernels/columns.h"

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

// The [B, T, W] block geometry shared by gather_columns and scatter_add_columns: `part` is
// [B, T - row0, w] and fits at row row0, column c0 of `whole`.
void check_block(const Tensor& whole, int64_t row0, int64_t c0, const Tensor& part, const char* op,
                 const char* part_name) {
  LINEA_CHECK(whole.ndim() == 3 && part.ndim() == 3 && part.dim(0) == whole.dim(0) && row0 >= 0 &&
              part.dim(1) == whole.dim(1) - row0 && c0 >= 0 && c0 + part.dim(2) <= whole.dim(2))
      << op << ": " << part_name << " " << shape_str(part.shape()) << " at row " << row0
      << ", column " << c0 << " of " << shape_str(whole.shape())
      << " (needs [B, T - row0, w] with c0 + w <= W)";
}

void check_bias(const Tensor& y, const Tensor& b, const char* op, const char* name) {
  LINEA_CHECK(y.ndim() >= 1 && b.ndim() == 1 && b.dim(0) == y.dim(-1))
      << op << ": " << name << " " << shape_str(b.shape()) << " must be [C] for "
      << shape_str(y.shape()) << " (C its last dimension)";
}

}  // namespace

void add_bias(Tensor& y, const Tensor& b) {
  LINEA_ON_CUDA(y, add_bias(y, b));
  const char* op = "add_bias";
  cpu::check_float(y, op, "y");
  cpu::check_like(b, y, op, "b", "y");
  check_bias(y, b, op, "b");
  cpu::dispatch_float(y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = b.dim(0), rows = C ? y.numel() / C : 0;
    T* yp = y.data<T>();
    const T* bp = b.data<T>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c) yp[r * C + c] += bp[c];
  });
}

void bias_backward(const Tensor& dy, Tensor& db) {
  LINEA_ON_CUDA(dy, bias_backward(dy, db));
  const char* op = "bias_backward";
  cpu::check_float(dy, op, "dy");
  cpu::check_like(db, dy, op, "db", "dy");
  check_bias(dy, db, op, "db");
  cpu::dispatch_float(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = db.dim(0), rows = C ? dy.numel() / C : 0;
    const T* dp = dy.data<T>();
    T* bp = db.data<T>();
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t r = 0; r < rows; ++r) acc += dp[r * C + c];
      bp[c] += static_cast<T>(acc);
    }
  });
}

void gather_columns(const Tensor& t, int64_t row0, int64_t c0, Tensor& out) {
  LINEA_ON_CUDA(t, gather_columns(t, row0, c0, out));
  const char* op = "gather_columns";
  cpu::check_float(t, op, "t");
  cpu::check_like(out, t, op, "out", "t");
  check_block(t, row0, c0, out, op, "out");
  const int64_t B = t.dim(0), T_ = t.dim(1), W = t.dim(2), w = out.dim(2), R = T_ - row0;
  cpu::dispatch_float(t.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = t.data<T>();
    T* dst = out.data<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < w; ++c)
          dst[(b * R + r) * w + c] = src[(b * T_ + row0 + r) * W + c0 + c];
  });
}

void scatter_add_columns(Tensor& dst, int64_t row0, int64_t c0, const Tensor& src) {
  LINEA_ON_CUDA(dst, scatter_add_columns(dst, row0, c0, src));
  const char* op = "scatter_add_columns";
  cpu::check_float(dst, op, "dst");
  cpu::check_like(src, dst, op, "src", "dst");
  check_block(dst, row0, c0, src, op, "src");
  const int64_t B = dst.dim(0), T_ = dst.dim(1), W = dst.dim(2), w = src.dim(2), R = T_ - row0;
  cpu::dispatch_float(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* s = src.data<T>();
    T* d = dst.data<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < w; ++c)
          d[(b * T_ + row0 + r) * W + c0 + c] += s[(b * R + r) * w + c];
  });
}

}  // namespace linea::kernels
