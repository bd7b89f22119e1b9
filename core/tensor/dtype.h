// Element types. f64 exists for finite-difference tests; bf16 is a storage type for the GPU path
// (round-to-nearest-even on conversion); integer types hold token ids and routing indices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace linea {

enum class DType : uint8_t { kF32, kF64, kBF16, kI32, kI64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
// Parses "f32", "f64", "bf16", "i32", "i64"; throws linea::Error naming the value otherwise.
DType dtype_from_name(const std::string& name);

// bf16 as raw bits; conversions are explicit.
struct BF16 {
  uint16_t bits;
};
inline float bf16_to_float(BF16 v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline BF16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return BF16{0x7fc0};  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                               // RNE
  return BF16{static_cast<uint16_t>(u >> 16)};
}

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kF64;
};
template <>
struct DTypeOf<BF16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};

}  // namespace linea
