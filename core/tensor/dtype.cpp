#include "core/tensor/dtype.h"

#include "core/util/check.h"

namespace linea {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kF64:
      return 8;
    case DType::kBF16:
      return 2;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF64:
      return "f64";
    case DType::kBF16:
      return "bf16";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
  }
  return "?";
}

DType dtype_from_name(const std::string& name) {
  for (DType t : {DType::kF32, DType::kF64, DType::kBF16, DType::kI32, DType::kI64}) {
    if (name == dtype_name(t)) return t;
  }
  LINEA_USER_CHECK(false, "use one of f32, f64, bf16, i32, i64")
      << "unknown dtype '" << name << "'";
  return DType::kF32;
}

}  // namespace linea
