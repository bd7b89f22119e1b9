// Shared by the CUDA tests: the skip where no GPU exists, random inputs, and the comparison
// against the CPU reference run in f64 on the very values the GPU saw (bf16 inputs rounded
// first), so that a tolerance measures the kernel, not the input rounding.
//
// Tolerances (rel_max_diff: largest |got - ref| over the largest |ref|):
//   kTolF32   f32 storage, f32 arithmetic (reductions over up to ~1e5 terms)
//   kTolBF16  bf16 outputs: one rounding to 8 significant bits (2^-8 = 3.9e-3) plus f32 error
#pragma once

#include <gtest/gtest.h>

#include "core/tensor/cuda_device.h"
#include "core/tensor/tensor.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea::testing {

constexpr double kTolF32 = 2e-5;
constexpr double kTolBF16 = 1e-2;

inline double tol_for(DType t) { return t == DType::kBF16 ? kTolBF16 : kTolF32; }

// Fresh N(0, stddev) values (CPU, f64 draws) stored in `dt` on cuda:0.
inline Tensor random_cuda(const Shape& s, uint64_t seed, DType dt, double stddev = 1.0) {
  return random_tensor(s, seed, DType::kF64, stddev).to(dt).cuda(0);
}

// The values a tensor holds, wherever it is, as f64 on the CPU (the reference's input).
inline Tensor ref64(const Tensor& t) { return t.cpu().to(DType::kF64); }

// A CUDA output buffer filled with NaN, so that an element the kernel forgets to write fails.
inline Tensor poisoned_cuda(const Shape& s, DType dt) {
  Tensor t = Tensor::empty(s, dt, Device::cuda(0));
  t.fill_(std::nan(""));
  return t;
}

inline double rel_err(const Tensor& got, const Tensor& ref) {
  const Tensor g = ref64(got), r = ref64(ref);
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (std::isnan(g.item(i))) return std::numeric_limits<double>::infinity();
  }
  return rel_max_diff(g, r);
}

}  // namespace linea::testing

// First line of every CUDA test.
#define LINEA_REQUIRE_CUDA()                                                   \
  if (::linea::cuda::device_count() == 0) {                                    \
    GTEST_SKIP() << "no CUDA device: " << ::linea::cuda::unavailable_reason(); \
  }
