#include "kernels/moe_permute.h"

#include <cmath>
#include <cstring>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

void check_index(const Tensor& t, DType dt, const char* op, const char* name) {
  LINEA_CHECK(t.defined()) << op << ": " << name << " is undefined";
  LINEA_CHECK(t.device().is_cpu()) << op << ": " << name << " is on " << t.device().str();
  LINEA_CHECK(t.dtype() == dt && t.ndim() == 1)
      << op << ": " << name << " " << cpu::describe(t) << " must be 1-D " << dtype_name(dt);
}

void check_rows(const Tensor& t, int64_t rows, int64_t D, const char* op, const char* name) {
  LINEA_CHECK(t.ndim() == 2 && t.dim(0) == rows && t.dim(1) == D)
      << op << ": " << name << " " << shape_str(t.shape()) << ", expected [" << rows << ", " << D
      << "]";
}

// Every copy's row is -1 or inside [0, rows).
void check_copy_rows(const int32_t* copy_row, int64_t copies, int64_t rows, const char* op) {
  for (int64_t c = 0; c < copies; ++c)
    LINEA_CHECK(copy_row[c] >= -1 && copy_row[c] < rows)
        << op << ": copy " << c << " has row " << copy_row[c] << ", outside [-1, " << rows << ")";
}

int64_t tokens_of(const Tensor& copy_row, int64_t top_k, const char* op) {
  LINEA_CHECK(top_k >= 1 && copy_row.numel() % top_k == 0)
      << op << ": " << copy_row.numel() << " copies for top_k " << top_k;
  return copy_row.numel() / top_k;
}

size_t row_bytes(const Tensor& t) {
  return t.dim(0) == 0 ? 0 : t.nbytes() / static_cast<size_t>(t.dim(0));
}

void check_byte_rows(const Tensor& in, const Tensor& index, const Tensor& out, const char* op) {
  LINEA_CHECK(in.defined() && out.defined() && in.ndim() >= 1 && out.ndim() >= 1)
      << op << ": rows are undefined or 0-D";
  check_index(index, DType::kI64, op, "index");
  LINEA_CHECK(in.device().is_cpu() && out.device().is_cpu()) << op << ": CPU tensors expected";
  Shape a = in.shape(), b = out.shape();
  a[0] = b[0] = 0;
  LINEA_CHECK(a == b && in.dtype() == out.dtype())
      << op << ": in " << cpu::describe(in) << " and out " << cpu::describe(out)
      << " must have one row shape and dtype";
}

}  // namespace

void moe_permute(const Tensor& x, const Tensor& row_copy, int64_t top_k, Tensor& rows) {
  LINEA_ON_CUDA(x, moe_permute(x, row_copy, top_k, rows));
  const char* op = "moe_permute";
  cpu::check_float(x, op, "x");
  cpu::check_like(rows, x, op, "rows", "x");
  check_index(row_copy, DType::kI32, op, "row_copy");
  const int64_t N = x.dim(0), D = x.dim(-1), R = row_copy.numel();
  check_rows(rows, R, D, op, "rows");
  const int32_t* rc = row_copy.data<int32_t>();
  cpu::dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* out = rows.data<T>();
    for (int64_t r = 0; r < R; ++r) {
      const int64_t t = rc[r] / top_k;
      LINEA_CHECK(rc[r] >= 0 && t < N) << op << ": row " << r << " has copy " << rc[r];
      std::memcpy(out + r * D, xp + t * D, static_cast<size_t>(D) * sizeof(T));
    }
  });
}

void moe_permute_backward(const Tensor& drows, const Tensor& copy_row, int64_t top_k, Tensor& dx) {
  LINEA_ON_CUDA(drows, moe_permute_backward(drows, copy_row, top_k, dx));
  const char* op = "moe_permute_backward";
  cpu::check_float(drows, op, "drows");
  cpu::check_like(dx, drows, op, "dx", "drows");
  check_index(copy_row, DType::kI32, op, "copy_row");
  const int64_t N = tokens_of(copy_row, top_k, op), D = drows.dim(-1), R = drows.dim(0);
  check_rows(dx, N, D, op, "dx");
  const int32_t* cr = copy_row.data<int32_t>();
  check_copy_rows(cr, N * top_k, R, op);
  cpu::dispatch_float(dx.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = drows.data<T>();
    T* out = dx.data<T>();
    for (int64_t t = 0; t < N; ++t)
      for (int64_t j = 0; j < top_k; ++j) {
        const int32_t r = cr[t * top_k + j];
        if (r < 0) continue;
        for (int64_t d = 0; d < D; ++d) out[t * D + d] += g[r * D + d];
      }
  });
}

void moe_unpermute_combine(const Tensor& rows, const Tensor& copy_row, const Tensor& weight,
                           int64_t top_k, Tensor& out) {
  LINEA_ON_CUDA(rows, moe_unpermute_combine(rows, copy_row, weight, top_k, out));
  const char* op = "moe_unpermute_combine";
  cpu::check_float(rows, op, "rows");
  cpu::check_like(out, rows, op, "out", "rows");
  cpu::check_like(weight, rows, op, "weight", "rows");
  check_index(copy_row, DType::kI32, op, "copy_row");
  const int64_t N = tokens_of(copy_row, top_k, op), D = rows.dim(-1), R = rows.dim(0);
  check_rows(out, N, D, op, "out");
  LINEA_CHECK(weight.numel() == N * top_k)
      << op << ": weight " << shape_str(weight.shape()) << " for " << N * top_k << " copies";
  const int32_t* cr = copy_row.data<int32_t>();
  check_copy_rows(cr, N * top_k, R, op);
  cpu::dispatch_float(rows.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* in = rows.data<T>();
    const T* w = weight.data<T>();
    T* o = out.data<T>();
    for (int64_t t = 0; t < N; ++t) {
      for (int64_t d = 0; d < D; ++d) o[t * D + d] = T(0);
      for (int64_t j = 0; j < top_k; ++j) {
        const int64_t c = t * top_k + j;
        if (cr[c] < 0) continue;
        for (int64_t d = 0; d < D; ++d) o[t * D + d] += w[c] * in[cr[c] * D + d];
      }
    }
  });
}

void moe_unpermute_combine_backward(const Tensor& dy, const Tensor& rows, const Tensor& copy_row,
                                    const Tensor& weight, int64_t top_k, Tensor& drows,
                                    Tensor& dweight) {
  LINEA_ON_CUDA(dy,
                moe_unpermute_combine_backward(dy, rows, copy_row, weight, top_k, drows, dweight));
  const char* op = "moe_unpermute_combine_backward";
  cpu::check_float(dy, op, "dy");
  cpu::check_like(rows, dy, op, "rows", "dy");
  cpu::check_like(drows, dy, op, "drows", "dy");
  cpu::check_like(weight, dy, op, "weight", "dy");
  cpu::check_like(dweight, dy, op, "dweight", "dy");
  check_index(copy_row, DType::kI32, op, "copy_row");
  const int64_t N = tokens_of(copy_row, top_k, op), D = dy.dim(-1), R = rows.dim(0);
  check_rows(dy, N, D, op, "dy");
  check_rows(rows, R, D, op, "rows");
  check_rows(drows, R, D, op, "drows");
  LINEA_CHECK(weight.numel() == N * top_k && dweight.numel() == N * top_k)
      << op << ": weight " << shape_str(weight.shape()) << ", dweight "
      << shape_str(dweight.shape()) << " for " << N * top_k << " copies";
  const int32_t* cr = copy_row.data<int32_t>();
  check_copy_rows(cr, N * top_k, R, op);
  cpu::dispatch_float(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = dy.data<T>();
    const T* in = rows.data<T>();
    const T* w = weight.data<T>();
    T* dr = drows.data<T>();
    T* dw = dweight.data<T>();
    for (int64_t c = 0; c < N * top_k; ++c) {
      const int64_t r = cr[c], t = c / top_k;
      dw[c] = T(0);
      if (r < 0) continue;
      T acc = 0;
      for (int64_t d = 0; d < D; ++d) {
        acc += g[t * D + d] * in[r * D + d];
        dr[r * D + d] = w[c] * g[t * D + d];
      }
      dw[c] = acc;
    }
  });
}

void moe_gate_add(const Tensor& logit, const Tensor& s, Tensor& gate, Tensor& y) {
  LINEA_ON_CUDA(s, moe_gate_add(logit, s, gate, y));
  const char* op = "moe_gate_add";
  cpu::check_float(s, op, "s");
  cpu::check_same_shape(y, s, op, "y", "s");
  cpu::check_like(logit, s, op, "logit", "s");
  cpu::check_like(gate, s, op, "gate", "s");
  const int64_t N = s.dim(0), D = s.dim(-1);
  LINEA_CHECK(logit.numel() == N && gate.numel() == N)
      << op << ": logit " << shape_str(logit.shape()) << ", gate " << shape_str(gate.shape())
      << " for " << N << " rows";
  cpu::dispatch_float(s.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* z = logit.data<T>();
    const T* sp = s.data<T>();
    T* g = gate.data<T>();
    T* yp = y.data<T>();
    for (int64_t t = 0; t < N; ++t) {
      g[t] = T(1) / (T(1) + std::exp(-z[t]));
      for (int64_t d = 0; d < D; ++d) yp[t * D + d] += g[t] * sp[t * D + d];
    }
  });
}

void moe_gate_backward(const Tensor& dy, const Tensor& s, const Tensor& gate, Tensor& ds,
                       Tensor& dlogit) {
  LINEA_ON_CUDA(dy, moe_gate_backward(dy, s, gate, ds, dlogit));
  const char* op = "moe_gate_backward";
  cpu::check_float(dy, op, "dy");
  cpu::check_same_shape(s, dy, op, "s", "dy");
  cpu::check_same_shape(ds, dy, op, "ds", "dy");
  cpu::check_like(gate, dy, op, "gate", "dy");
  cpu::check_like(dlogit, dy, op, "dlogit", "dy");
  const int64_t N = dy.dim(0), D = dy.dim(-1);
  LINEA_CHECK(dlogit.numel() == N && gate.numel() == N)
      << op << ": dlogit " << shape_str(dlogit.shape()) << ", gate " << shape_str(gate.shape())
      << " for " << N << " rows";
  cpu::dispatch_float(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = dy.data<T>();
    const T* sp = s.data<T>();
    const T* gv = gate.data<T>();
    T* dsp = ds.data<T>();
    T* dl = dlogit.data<T>();
    for (int64_t t = 0; t < N; ++t) {
      T acc = 0;
      for (int64_t d = 0; d < D; ++d) {
        acc += g[t * D + d] * sp[t * D + d];
        dsp[t * D + d] = gv[t] * g[t * D + d];
      }
      dl[t] = acc * gv[t] * (T(1) - gv[t]);
    }
  });
}

void gather_rows(const Tensor& in, const Tensor& index, Tensor& out) {
  LINEA_ON_CUDA(in, gather_rows(in, index, out));
  const char* op = "gather_rows";
  check_byte_rows(in, index, out, op);
  LINEA_CHECK(out.dim(0) == index.numel())
      << op << ": out has " << out.dim(0) << " rows for " << index.numel() << " indices";
  const size_t rb = row_bytes(in);
  const int64_t* ix = index.data<int64_t>();
  const auto* src = static_cast<const char*>(in.raw());
  auto* dst = static_cast<char*>(out.raw());
  for (int64_t j = 0; j < index.numel(); ++j) {
    LINEA_CHECK(ix[j] >= 0 && ix[j] < in.dim(0))
        << op << ": index " << ix[j] << " at " << j << " outside [0, " << in.dim(0) << ")";
    if (rb)
      std::memcpy(dst + static_cast<size_t>(j) * rb, src + static_cast<size_t>(ix[j]) * rb, rb);
  }
}

void scatter_rows(const Tensor& in, const Tensor& index, Tensor& out) {
  LINEA_ON_CUDA(in, scatter_rows(in, index, out));
  const char* op = "scatter_rows";
  check_byte_rows(in, index, out, op);
  LINEA_CHECK(in.dim(0) == index.numel())
      << op << ": in has " << in.dim(0) << " rows for " << index.numel() << " indices";
  const size_t rb = row_bytes(in);
  const int64_t* ix = index.data<int64_t>();
  const auto* src = static_cast<const char*>(in.raw());
  auto* dst = static_cast<char*>(out.raw());
  for (int64_t j = 0; j < index.numel(); ++j) {
    LINEA_CHECK(ix[j] >= 0 && ix[j] < out.dim(0))
        << op << ": index " << ix[j] << " at " << j << " outside [0, " << out.dim(0) << ")";
    if (rb)
      std::memcpy(dst + static_cast<size_t>(ix[j]) * rb, src + static_cast<size_t>(j) * rb, rb);
  }
}

}  // namespace linea::kernels
