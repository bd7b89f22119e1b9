// Internal to kernels/cpu: what the attention-family kernels (linear, gated linear, delta rule,
// softmax) share. Their tensors are [B, T, H, D] (a gate [B, T, H] reads as D = 1) and their states
// [B, H, R, C]; the kernels pack one head's rows of a chunk into a contiguous [C, D] tile, run BLAS
// on the tiles and write the result rows back.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>

#include "core/tensor/tensor.h"
#include "core/util/check.h"
#include "kernels/cpu/blas.h"

namespace linea::kernels::cpu {

// ---- checks --------------------------------------------------------------------------------

// q, k: [B, T, H, Dk]; v: [B, T, H, Dv].
struct HeadDims {
  int64_t B, T, H, Dk, Dv;
};

inline constexpr const char* kChunkHint =
    "choose a chunk size that divides the sequence length (for example a power of two no larger "
    "than it), or pad the sequence to a multiple of the chunk";

// Checks q, k and v of one dtype on the CPU; every other tensor is checked against the returned
// dims.
inline HeadDims check_qkv(const Tensor& q, const Tensor& k, const Tensor& v, const char* op) {
  LINEA_CHECK(q.defined() && k.defined() && v.defined()) << op << ": q, k and v are required";
  LINEA_CHECK(q.ndim() == 4) << op << ": q must be [B, T, H, Dk], got " << shape_str(q.shape());
  LINEA_CHECK(q.dtype() == DType::kF32 || q.dtype() == DType::kF64)
      << op << ": f32 or f64 only, got " << dtype_name(q.dtype());
  LINEA_CHECK(q.device().is_cpu()) << op << ": CPU kernel got a tensor on " << q.device().str();
  HeadDims d{q.dim(0), q.dim(1), q.dim(2), q.dim(3), v.ndim() == 4 ? v.dim(3) : -1};
  LINEA_CHECK(k.shape() == q.shape())
      << op << ": k " << shape_str(k.shape()) << " must match q " << shape_str(q.shape());
  LINEA_CHECK(v.ndim() == 4 && v.dim(0) == d.B && v.dim(1) == d.T && v.dim(2) == d.H)
      << op << ": v must be [B, T, H, Dv] with q's B, T, H " << shape_str(q.shape()) << ", got "
      << shape_str(v.shape());
  LINEA_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype())
      << op << ": q, k, v must share one dtype, got " << dtype_name(q.dtype()) << ", "
      << dtype_name(k.dtype()) << ", " << dtype_name(v.dtype());
  LINEA_CHECK(k.device().is_cpu() && v.device().is_cpu())
      << op << ": CPU kernel, k or v not on CPU";
  // cblas takes int dimensions.
  LINEA_CHECK(d.T <= INT_MAX && d.Dk <= INT_MAX && d.Dv <= INT_MAX)
      << op << ": dimensions too large for BLAS: " << shape_str(q.shape());
  return d;
}

// A tensor the kernel reads or writes alongside its inputs: the given shape, their dtype, CPU.
inline void check_operand(const Tensor& t, const Shape& want, DType dtype, const char* op,
                          const char* name) {
  LINEA_CHECK(t.shape() == want) << op << ": " << name << " must be " << shape_str(want) << ", got "
                                 << shape_str(t.shape());
  LINEA_CHECK(t.dtype() == dtype) << op << ": " << name << " is " << dtype_name(t.dtype())
                                  << ", inputs are " << dtype_name(dtype);
  LINEA_CHECK(t.device().is_cpu()) << op << ": " << name << " is on " << t.device().str();
}

// An incoming or outgoing state [B, H, Dk, Dv]; undefined = zero / not wanted.
inline void check_optional_state(const Tensor& s, const HeadDims& d, DType dtype, const char* op,
                                 const char* name) {
  if (s.defined()) check_operand(s, {d.B, d.H, d.Dk, d.Dv}, dtype, op, name);
}

inline void check_chunk(int64_t chunk, const HeadDims& d, const char* op) {
  LINEA_USER_CHECK(chunk > 0 && d.T % chunk == 0, kChunkHint)
      << op << ": chunk " << chunk
      << " must be positive and divide the sequence length T = " << d.T;
}

// ---- packed tiles --------------------------------------------------------------------------

// One (b, h) stream of a [B, T, H, D] tensor: rows of D values, `stride` apart. A gate [B, T, H]
// reads as rows of one value; an undefined tensor gives base == nullptr.
template <typename T>
struct HeadRows {
  T* base;
  int64_t stride;
  T* row(int64_t t) const { return base + t * stride; }
};

template <typename T>
HeadRows<T> head_rows(const Tensor& x, int64_t b, int64_t h) {
  if (!x.defined()) return {nullptr, 0};
  const int64_t T_ = x.dim(1), H = x.dim(2), D = x.ndim() == 4 ? x.dim(3) : 1;
  return {x.data<T>() + (b * T_ * H + h) * D, H * D};
}

// BLAS runs on contiguous [C, D] tiles; the head's rows in [B, T, H, D] are H*D apart, and a
// packed tile keeps every product's operands in a few cache lines.
template <typename T>
void gather(const HeadRows<T>& src, int64_t t0, int64_t C, int64_t D, T* dst) {
  for (int64_t i = 0; i < C; ++i) std::copy_n(src.row(t0 + i), D, dst + i * D);
}

template <typename T>
void scatter(const T* src, int64_t t0, int64_t C, int64_t D, const HeadRows<T>& dst) {
  for (int64_t i = 0; i < C; ++i) std::copy_n(src + i * D, D, dst.row(t0 + i));
}

// Causal mask including the diagonal: token i sees keys j <= i (S_t already holds token t).
template <typename T>
void zero_above_diagonal(T* a, int64_t C) {
  for (int64_t i = 0; i < C; ++i) std::fill(a + i * C + i + 1, a + (i + 1) * C, T(0));
}

// ---- per-head states -----------------------------------------------------------------------

// Head (b, h) of a state [B, H, ...] with `size` values a head; an undefined state reads as zeros.
template <typename T>
void load_state(const Tensor& s, int64_t b, int64_t h, int64_t size, T* out) {
  if (!s.defined()) {
    std::fill_n(out, size, T(0));
    return;
  }
  std::copy_n(s.data<T>() + (b * s.dim(1) + h) * size, size, out);
}

// o = scale * q S for one token (q [R], S [R, C], o [C]): the recurrent references' read-out.
template <typename T>
void read_state(const T* q, const T* S, int64_t R, int64_t C, T scale, T* o) {
  for (int64_t j = 0; j < C; ++j) {
    T acc = 0;
    for (int64_t i = 0; i < R; ++i) acc += q[i] * S[i * C + j];
    o[j] = scale * acc;
  }
}

template <typename T>
void store_state(const T* in, int64_t b, int64_t h, int64_t size, Tensor& s) {
  std::copy_n(in, size, s.data<T>() + (b * s.dim(1) + h) * size);
}

}  // namespace linea::kernels::cpu
