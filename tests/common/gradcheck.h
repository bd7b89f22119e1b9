// Finite-difference gradient checks in f64.
//
// The pattern: pick a random "upstream" tensor w with the output's shape and take the scalar
// L(x) = sum(forward(x) * w); the analytic input gradient is backward(dy = w). For each checked
// element, the central difference (L(x + h e_i) - L(x - h e_i)) / 2h must match the analytic value.
#pragma once

#include <cmath>
#include <functional>
#include <random>

#include "core/tensor/tensor.h"

namespace linea::testing {

// Fills a tensor with N(0, stddev) from a fixed seed.
inline void fill_normal(Tensor& t, uint64_t seed, double stddev = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.set_item(i, n(rng));
}

inline Tensor random_tensor(const Shape& s, uint64_t seed, DType dt = DType::kF64,
                            double stddev = 1.0) {
  Tensor t = Tensor::empty(s, dt);
  fill_normal(t, seed, stddev);
  return t;
}

inline double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a.item(i) * b.item(i);
  return s;
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.item(i) - b.item(i)));
  return m;
}

inline double max_abs(const Tensor& a) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.item(i)));
  return m;
}

// Compares `analytic` (dL/dx) with central differences of `loss` (which reads x) for every
// element of x (or a strided subset of at most max_checks). Returns the largest relative error
// |fd - an| / max(1, |fd|, |an|).
inline double gradcheck(Tensor& x, const Tensor& analytic, const std::function<double()>& loss,
                        double h = 1e-6, int64_t max_checks = 400) {
  int64_t n = x.numel();
  int64_t stride = std::max<int64_t>(1, n / max_checks);
  double worst = 0;
  for (int64_t i = 0; i < n; i += stride) {
    double orig = x.item(i);
    x.set_item(i, orig + h);
    double lp = loss();
    x.set_item(i, orig - h);
    double lm = loss();
    x.set_item(i, orig);
    double fd = (lp - lm) / (2 * h);
    double an = analytic.item(i);
    worst = std::max(worst, std::abs(fd - an) / std::max({1.0, std::abs(fd), std::abs(an)}));
  }
  return worst;
}

}  // namespace linea::testing
