// One template body for both float element types: dispatch_float(dt, f) calls f(float{}) or
// f(double{}) once per call, so the loops inside see plain pointers and no per-element branch.
#pragma once

#include "core/tensor/dtype.h"
#include "core/util/check.h"

namespace linea {

// The caller has checked that dt is f32 or f64; anything else is an internal error.
template <typename F>
decltype(auto) dispatch_float(DType dt, F&& f) {
  if (dt == DType::kF32) return f(float{});
  LINEA_CHECK(dt == DType::kF64) << "expected f32 or f64, got " << dtype_name(dt);
  return f(double{});
}

}  // namespace linea
