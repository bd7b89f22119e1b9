// Small helpers shared by the kernel tests: f32-vs-f64 comparison and error-message capture.
#pragma once

#include <algorithm>
#include <string>

#include "core/tensor/tensor.h"
#include "tests/common/gradcheck.h"

namespace linea::testing {

// Largest element difference of `got` from `ref`, relative to the largest |ref|, so that one
// tolerance fits results of any scale.
inline double rel_max_diff(const Tensor& got, const Tensor& ref) {
  return max_abs_diff(got, ref) / std::max(max_abs(ref), 1e-30);
}

// The linea::Error message thrown by f, or "" when it does not throw.
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace linea::testing
