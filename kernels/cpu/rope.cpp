// CPU rotary position embedding. The contract (convention, positions, gradient rule) is in
// kernels/rope.h.
#include "kernels/rope.h"

#include <cmath>
#include <vector>

#include "core/util/check.h"
#include "kernels/cpu/dispatch.h"

namespace linea::kernels {
namespace {

const char* kEvenHint =
    "RoPE rotates channel pairs (i, i + D/2), so the head dimension must be even; choose "
    "hidden_size / num_heads even";

void check_rope(const Tensor& in, const RopeParams& p, const Tensor& out, const char* op,
                const char* in_name, const char* out_name) {
  LINEA_CHECK(in.defined() && out.defined())
      << op << ": " << in_name << " and " << out_name << " are required";
  LINEA_CHECK(in.ndim() == 4) << op << ": " << in_name << " must be [B, T, H, D], got "
                              << shape_str(in.shape());
  LINEA_USER_CHECK(in.dim(3) % 2 == 0, kEvenHint)
      << op << ": head dimension D = " << in.dim(3) << " is odd";
  LINEA_CHECK(in.dtype() == DType::kF32 || in.dtype() == DType::kF64)
      << op << ": f32 or f64 only, got " << dtype_name(in.dtype());
  LINEA_CHECK(out.shape() == in.shape() && out.dtype() == in.dtype())
      << op << ": " << out_name << " " << shape_str(out.shape()) << " " << dtype_name(out.dtype())
      << " must match " << in_name << " " << shape_str(in.shape()) << " " << dtype_name(in.dtype());
  LINEA_CHECK(in.device().is_cpu() && out.device().is_cpu())
      << op << ": CPU kernel, " << in_name << " or " << out_name << " not on CPU";
  LINEA_CHECK(p.pos_offset >= 0) << op << ": pos_offset " << p.pos_offset << " must be >= 0";
  LINEA_CHECK(p.theta > 0) << op << ": theta " << p.theta << " must be positive";
}

// Rotates every pair by +angle (sign = 1) or -angle (sign = -1). Each pair is read into locals
// before it is written, which is what makes in == out safe.
template <typename T>
void rotate(const Tensor& in, const RopeParams& p, double sign, Tensor& out) {
  const int64_t B = in.dim(0), seq = in.dim(1), H = in.dim(2), D = in.dim(3), half = D / 2;
  // One [T, D/2] table serves every batch row and head.
  std::vector<double> inv_freq(half);
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = std::pow(p.theta, -2.0 * static_cast<double>(i) / static_cast<double>(D));
  std::vector<T> cos_t(seq * half), sin_t(seq * half);
  for (int64_t t = 0; t < seq; ++t) {
    const double pos = static_cast<double>(p.pos_offset + t);
    for (int64_t i = 0; i < half; ++i) {
      const double a = pos * inv_freq[i];
      cos_t[t * half + i] = static_cast<T>(std::cos(a));
      sin_t[t * half + i] = static_cast<T>(sign * std::sin(a));
    }
  }
  const T* src = in.data<T>();
  T* dst = out.data<T>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      const T* c = cos_t.data() + t * half;
      const T* s = sin_t.data() + t * half;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t base = ((b * seq + t) * H + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          const T x1 = src[base + i], x2 = src[base + half + i];
          dst[base + i] = x1 * c[i] - x2 * s[i];
          dst[base + half + i] = x2 * c[i] + x1 * s[i];
        }
      }
    }
  }
}

void run(const Tensor& in, const RopeParams& p, double sign, Tensor& out) {
  if (in.dtype() == DType::kF32) {
    rotate<float>(in, p, sign, out);
  } else {
    rotate<double>(in, p, sign, out);
  }
}

}  // namespace

void rope_forward(const Tensor& x, const RopeParams& p, Tensor& y) {
  LINEA_ON_CUDA(x, rope_forward(x, p, y));
  check_rope(x, p, y, "rope_forward", "x", "y");
  run(x, p, 1.0, y);
}

void rope_backward(const Tensor& dy, const RopeParams& p, Tensor& dx) {
  LINEA_ON_CUDA(dy, rope_backward(dy, p, dx));
  check_rope(dy, p, dx, "rope_backward", "dy", "dx");
  run(dy, p, -1.0, dx);
}

}  // namespace linea::kernels
