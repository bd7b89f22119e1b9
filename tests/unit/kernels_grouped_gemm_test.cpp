// The CPU grouped linear products (kernels/grouped_gemm.h) against element loops in f64, with
// empty groups and a gradient split into parts; the packed SwiGLU against the unpacked one.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/grouped_gemm.h"
#include "kernels/swiglu.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using testing::random_tensor;
using testing::rel_max_diff;

constexpr double kTol = 1e-13;

TEST(KernelsGroupedGemm, ForwardAndBackwardMatchLoops) {
  const std::vector<int64_t> counts = {0, 3, 5, 0, 1, 4, 0};
  const int64_t E = 7, R = 13, in = 6, out = 8, P = 2, o = out / P;
  const Tensor x = random_tensor({R, in}, 1, DType::kF64);
  const Tensor w = random_tensor({E, out, in}, 2, DType::kF64);
  const Tensor dy = random_tensor({R, out}, 3, DType::kF64);
  Tensor y = Tensor::empty({R, out}, DType::kF64), dx = Tensor::empty({R, in}, DType::kF64);
  std::vector<Tensor> dw;
  for (int64_t i = 0; i < E * P; ++i) dw.push_back(random_tensor({o, in}, 10 + i, DType::kF64));
  std::vector<Tensor> dw0;
  for (const Tensor& t : dw) dw0.push_back(t.clone());
  kernels::grouped_linear_forward(x, w, counts, y);
  kernels::grouped_linear_backward(x, w, dy, counts, dx, dw);

  Tensor y_ref = Tensor::zeros({R, out}, DType::kF64), dx_ref = Tensor::zeros({R, in}, DType::kF64);
  int64_t r0 = 0;
  for (int64_t e = 0; e < E; r0 += counts[e], ++e) {
    for (int64_t r = r0; r < r0 + counts[e]; ++r) {
      for (int64_t j = 0; j < out; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < in; ++i) acc += x.item(r * in + i) * w.item((e * out + j) * in + i);
        y_ref.set_item(r * out + j, acc);
      }
      for (int64_t i = 0; i < in; ++i) {
        double acc = 0;
        for (int64_t j = 0; j < out; ++j)
          acc += dy.item(r * out + j) * w.item((e * out + j) * in + i);
        dx_ref.set_item(r * in + i, acc);
      }
    }
    for (int64_t j = 0; j < out; ++j) {
      for (int64_t i = 0; i < in; ++i) {
        double acc = 0;
        for (int64_t r = r0; r < r0 + counts[e]; ++r)
          acc += dy.item(r * out + j) * x.item(r * in + i);
        Tensor& ref = dw0[e * P + j / o];
        ref.set_item((j % o) * in + i, ref.item((j % o) * in + i) + acc);
      }
    }
  }
  EXPECT_LT(rel_max_diff(y, y_ref), kTol);
  EXPECT_LT(rel_max_diff(dx, dx_ref), kTol);
  for (int64_t i = 0; i < E * P; ++i) EXPECT_LT(rel_max_diff(dw[i], dw0[i]), kTol) << "dw " << i;
}

TEST(KernelsGroupedGemm, RefusesBadCounts) {
  const Tensor x = random_tensor({5, 4}, 1, DType::kF32);
  const Tensor w = random_tensor({2, 3, 4}, 2, DType::kF32);
  Tensor y = Tensor::empty({5, 3}, DType::kF32);
  EXPECT_THROW(kernels::grouped_linear_forward(x, w, {2, 2}, y), Error);   // sum 4, 5 rows
  EXPECT_THROW(kernels::grouped_linear_forward(x, w, {5}, y), Error);      // 1 count, 2 groups
  EXPECT_THROW(kernels::grouped_linear_forward(x, w, {6, -1}, y), Error);  // negative
  Tensor dx = Tensor::empty({5, 4}, DType::kF32);
  std::vector<Tensor> dw(3, Tensor::zeros({1, 4}, DType::kF32));  // 3 parts, 2 groups
  EXPECT_THROW(kernels::grouped_linear_backward(x, w, y, {2, 3}, dx, dw), Error);
}

TEST(KernelsSwiGlu, PackedMatchesUnpacked) {
  const int64_t R = 5, F = 7;
  const Tensor gu = random_tensor({R, 2 * F}, 4, DType::kF64, 2.0);
  const Tensor dh = random_tensor({R, F}, 5, DType::kF64);
  Tensor g = Tensor::empty({R, F}, DType::kF64), u = Tensor::empty({R, F}, DType::kF64);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t f = 0; f < F; ++f) {
      g.set_item(r * F + f, gu.item(r * 2 * F + f));
      u.set_item(r * F + f, gu.item(r * 2 * F + F + f));
    }
  }
  Tensor h = Tensor::empty({R, F}, DType::kF64), h_ref = Tensor::empty({R, F}, DType::kF64);
  kernels::swiglu_packed_forward(gu, h);
  kernels::swiglu_forward(g, u, h_ref);
  EXPECT_EQ(rel_max_diff(h, h_ref), 0.0);
  Tensor dgu = gu.clone();  // in place
  kernels::swiglu_packed_backward(dgu, dh, dgu);
  Tensor dg = Tensor::empty({R, F}, DType::kF64), du = Tensor::empty({R, F}, DType::kF64);
  kernels::swiglu_backward(g, u, dh, dg, du);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t f = 0; f < F; ++f) {
      EXPECT_EQ(dgu.item(r * 2 * F + f), dg.item(r * F + f));
      EXPECT_EQ(dgu.item(r * 2 * F + F + f), du.item(r * F + f));
    }
  }
}

}  // namespace
}  // namespace linea
