// Internal to kernels/cpu: argument checks and the f32/f64 dispatch shared by the CPU kernels.
// Each kernel is one template body on the element type; `dispatch_float` picks the
// instantiation once per call.
#pragma once

#include <string>

#include "core/tensor/dispatch.h"
#include "core/tensor/tensor.h"
#include "core/util/check.h"

#ifdef LINEA_HAS_CUDA
#include "kernels/cuda/ops.h"
// First line of a public kernel: hands the whole call to the CUDA fast path of the same name
// (kernels/cuda/ops.h) when `t` lives on a GPU; the CPU code below it never sees CUDA tensors.
#define LINEA_ON_CUDA(t, call) \
  if ((t).defined() && !(t).device().is_cpu()) return ::linea::kernels::cuda::call
#else
#define LINEA_ON_CUDA(t, call) static_cast<void>(0)
#endif

namespace linea::kernels::cpu {

inline std::string describe(const Tensor& t) {
  return shape_str(t.shape()) + " " + dtype_name(t.dtype());
}

// A defined CPU tensor of f32 or f64.
inline void check_float(const Tensor& t, const char* op, const char* name) {
  LINEA_CHECK(t.defined()) << op << ": " << name << " is undefined";
  LINEA_CHECK(t.device().is_cpu())
      << op << ": " << name << " is on " << t.device().str() << ", the CPU kernel needs cpu";
  LINEA_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kF64)
      << op << ": " << name << " " << describe(t) << " must be f32 or f64";
}

// `t` is a float tensor of the same dtype as `ref` (all operands of a call share one dtype).
inline void check_like(const Tensor& t, const Tensor& ref, const char* op, const char* name,
                       const char* ref_name) {
  check_float(t, op, name);
  LINEA_CHECK(t.dtype() == ref.dtype())
      << op << ": " << name << " " << describe(t) << " and " << ref_name << " " << describe(ref)
      << " must have one dtype";
}

inline void check_same_shape(const Tensor& t, const Tensor& ref, const char* op, const char* name,
                             const char* ref_name) {
  check_like(t, ref, op, name, ref_name);
  LINEA_CHECK(t.shape() == ref.shape())
      << op << ": " << name << " " << shape_str(t.shape()) << " must have the shape of " << ref_name
      << " " << shape_str(ref.shape());
}

inline void check_ids(const Tensor& t, const char* op, const char* name) {
  LINEA_CHECK(t.defined()) << op << ": " << name << " is undefined";
  LINEA_CHECK(t.device().is_cpu()) << op << ": " << name << " is on " << t.device().str();
  LINEA_CHECK(t.dtype() == DType::kI32)
      << op << ": " << name << " " << describe(t) << " must be i32";
}

// f(float{}) or f(double{}) (core/tensor/dispatch.h); the caller has checked the dtype.
using ::linea::dispatch_float;

}  // namespace linea::kernels::cpu
