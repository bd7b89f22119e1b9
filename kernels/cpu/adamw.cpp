#include "kernels/adamw.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

template <typename T>
void adamw_update(T* p, const T* g, T* m, T* v, int64_t n, double lr, double b1, double b2,
                  double eps, double wd, double bc1, double bc2) {
  for (int64_t i = 0; i < n; ++i) {
    const double gi = g[i];
    const double mi = b1 * m[i] + (1 - b1) * gi;
    const double vi = b2 * v[i] + (1 - b2) * gi * gi;
    m[i] = static_cast<T>(mi);
    v[i] = static_cast<T>(vi);
    const double update = (mi / bc1) / (std::sqrt(vi / bc2) + eps) + wd * p[i];
    p[i] = static_cast<T>(p[i] - lr * update);
  }
}

}  // namespace

void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& s) {
  LINEA_ON_CUDA(p, adamw_step(p, g, m, v, s));
  const char* op = "adamw_step";
  cpu::check_float(p, op, "p");
  cpu::check_same_shape(g, p, op, "g", "p");
  cpu::check_same_shape(m, p, op, "m", "p");
  cpu::check_same_shape(v, p, op, "v", "p");
  cpu::dispatch_float(p.dtype(), [&](auto tag) {
    using T = decltype(tag);
    adamw_update(p.data<T>(), g.data<T>(), m.data<T>(), v.data<T>(), p.numel(), s.lr, s.beta1,
                 s.beta2, s.eps, s.weight_decay, s.bias_correction1, s.bias_correction2);
  });
}

}  // namespace linea::kernels
