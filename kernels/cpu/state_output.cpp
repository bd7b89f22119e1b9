// CPU reference of the incoming-state term of a segment's outputs (kernels/state_output.h).
#include "kernels/state_output.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

using cpu::check_like;
using cpu::describe;

struct Dims {
  int64_t B, T, H, Dk, Dv;
};

// Checks q, the gates and the state-shaped tensor s (f32/f64, one dtype); y is o or d_o.
Dims check_args(const Tensor& q, const Tensor& gk, const Tensor& gv, const Tensor& s,
                const Tensor& y, const char* op, const char* y_name, const char* s_name) {
  cpu::check_float(q, op, "q");
  LINEA_CHECK(q.ndim() == 4) << op << ": q " << describe(q) << " must be [B, T, H, Dk]";
  check_like(s, q, op, s_name, "q");
  check_like(y, q, op, y_name, "q");
  const Dims d{q.dim(0), q.dim(1), q.dim(2), q.dim(3), y.ndim() == 4 ? y.dim(3) : -1};
  LINEA_CHECK(y.shape() == (Shape{d.B, d.T, d.H, d.Dv}))
      << op << ": " << y_name << " " << describe(y) << " must be [B, T, H, Dv] with q's B, T, H";
  LINEA_CHECK(s.shape() == (Shape{d.B, d.H, d.Dk, d.Dv}))
      << op << ": " << s_name << " " << describe(s)
      << " must be [B, H, Dk, Dv] = " << shape_str({d.B, d.H, d.Dk, d.Dv});
  if (gk.defined()) {
    check_like(gk, q, op, "gk", "q");
    LINEA_CHECK(gk.shape() == q.shape() || gk.shape() == (Shape{d.B, d.T, d.H}))
        << op << ": gk " << describe(gk) << " must be [B, T, H, Dk] or [B, T, H]";
  }
  if (gv.defined()) {
    check_like(gv, q, op, "gv", "q");
    LINEA_CHECK(gv.shape() == y.shape())
        << op << ": gv " << describe(gv) << " must be [B, T, H, Dv]";
  }
  return d;
}

// Per (b, h), token by token: the decayed query row qt = q_t (.) exp(b_t) and the value-side
// factors ev = exp(bv_t), handed to `use(t, qt, ev)`.
template <typename T, typename F>
void for_each_decayed_row(const Tensor& q, const Tensor& gk, const Tensor& gv, const Dims& d,
                          int64_t b, int64_t h, F&& use) {
  const T* pq = q.data<T>();
  const T* pk = gk.defined() ? gk.data<T>() : nullptr;
  const T* pv = gv.defined() ? gv.data<T>() : nullptr;
  const bool scalar = gk.defined() && gk.ndim() == 3;
  std::vector<double> bk(d.Dk, 0.0), bv(d.Dv, 0.0), qt(d.Dk), ev(d.Dv, 1.0);
  for (int64_t t = 0; t < d.T; ++t) {
    const int64_t row = (b * d.T + t) * d.H + h;
    for (int64_t i = 0; i < d.Dk; ++i) {
      if (pk) bk[i] += static_cast<double>(scalar ? pk[row] : pk[row * d.Dk + i]);
      qt[i] = static_cast<double>(pq[row * d.Dk + i]) * std::exp(bk[i]);
    }
    if (pv)
      for (int64_t j = 0; j < d.Dv; ++j) {
        bv[j] += static_cast<double>(pv[row * d.Dv + j]);
        ev[j] = std::exp(bv[j]);
      }
    use(row, qt, ev);
  }
}

}  // namespace

void state_output_forward(const Tensor& q, const Tensor& gk, const Tensor& gv, double scale,
                          const Tensor& s, Tensor& o) {
  LINEA_ON_CUDA(q, state_output_forward(q, gk, gv, scale, s, o));
  const Dims d = check_args(q, gk, gv, s, o, "state_output_forward", "o", "s");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* ps = s.data<T>();
    T* po = o.data<T>();
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const T* sh = ps + (b * d.H + h) * d.Dk * d.Dv;
        for_each_decayed_row<T>(q, gk, gv, d, b, h,
                                [&](int64_t row, const auto& qt, const auto& ev) {
                                  for (int64_t j = 0; j < d.Dv; ++j) {
                                    double acc = 0;
                                    for (int64_t i = 0; i < d.Dk; ++i)
                                      acc += qt[i] * static_cast<double>(sh[i * d.Dv + j]);
                                    po[row * d.Dv + j] += static_cast<T>(scale * acc * ev[j]);
                                  }
                                });
      }
  });
}

void state_output_state_grad(const Tensor& q, const Tensor& gk, const Tensor& gv, double scale,
                             const Tensor& d_o, Tensor& ds) {
  LINEA_ON_CUDA(q, state_output_state_grad(q, gk, gv, scale, d_o, ds));
  const Dims d = check_args(q, gk, gv, ds, d_o, "state_output_state_grad", "d_o", "ds");
  cpu::dispatch_float(q.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const T* pd = d_o.data<T>();
    T* out = ds.data<T>();
    std::vector<double> acc(d.Dk * d.Dv);
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for_each_decayed_row<T>(
            q, gk, gv, d, b, h, [&](int64_t row, const auto& qt, const auto& ev) {
              for (int64_t i = 0; i < d.Dk; ++i)
                for (int64_t j = 0; j < d.Dv; ++j)
                  acc[i * d.Dv + j] += qt[i] * static_cast<double>(pd[row * d.Dv + j]) * ev[j];
            });
        T* dst = out + (b * d.H + h) * d.Dk * d.Dv;
        for (int64_t n = 0; n < d.Dk * d.Dv; ++n) dst[n] = static_cast<T>(scale * acc[n]);
      }
  });
}

}  // namespace linea::kernels
