// The element-wise kernels moved out of the Mamba2 and GSA mixers (kernels/ssd.h, kernels/gsa.h):
// forward values against formulas written here, f64 finite-difference gradients of every input,
// `=` into activation gradients and `+=` into the per-head parameter gradients.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/gsa.h"
#include "kernels/ssd.h"
#include "tests/common/gradcheck.h"
#include "tests/common/kernel_check.h"

namespace linea {
namespace {

using testing::dot;
using testing::gradcheck;
using testing::random_tensor;

constexpr double kGradTol = 1e-7;

TEST(KernelsSsd, HeadsBroadcastAndSumAreAdjoint) {
  const int64_t B = 2, T = 5, H = 3, N = 4;
  const Tensor m = random_tensor({B, T, N}, 1), d = random_tensor({B, T, H, N}, 2);
  Tensor bm = Tensor::empty({B, T, H, N}, DType::kF64), sd = Tensor::empty({B, T, N}, DType::kF64);
  kernels::ssd_heads_broadcast(m, bm);
  kernels::ssd_heads_sum(d, sd);
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < N; ++n) EXPECT_EQ(bm.item((r * H + h) * N + n), m.item(r * N + n));
  double worst = 0;
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t n = 0; n < N; ++n) {
      double want = 0;
      for (int64_t h = 0; h < H; ++h) want += d.item((r * H + h) * N + n);
      worst = std::max(worst, std::abs(sd.item(r * N + n) - want));
    }
  EXPECT_LT(worst, 1e-14);
  EXPECT_NEAR(dot(bm, d), dot(m, sd), 1e-12);
}

// L = <v, Wv> + <g, Wg> + <D x, Wo> through ssd_discretise and ssd_add_skip (into a zero o).
TEST(KernelsSsd, DiscretiseAndSkipGradientsMatchFiniteDifferences) {
  const int64_t B = 2, T = 3, H = 2, P = 5;
  Tensor x = random_tensor({B, T, H, P}, 3), dt = random_tensor({B, T, H}, 4);
  Tensor A_log = random_tensor({H}, 5, DType::kF64, 0.5), D = random_tensor({H}, 6);
  const Tensor Wv = random_tensor({B, T, H, P}, 7), Wg = random_tensor({B, T, H}, 8),
               Wo = random_tensor({B, T, H, P}, 9);
  auto loss = [&] {
    Tensor g = Tensor::empty(dt.shape(), DType::kF64), v = Tensor::empty(x.shape(), DType::kF64);
    kernels::ssd_discretise(x, dt, A_log, g, v);
    Tensor o = Tensor::zeros(x.shape(), DType::kF64);
    kernels::ssd_add_skip(x, D, o);
    return dot(v, Wv) + dot(g, Wg) + dot(o, Wo);
  };
  Tensor g = Tensor::empty(dt.shape(), DType::kF64), v = Tensor::empty(x.shape(), DType::kF64);
  kernels::ssd_discretise(x, dt, A_log, g, v);
  // The forward against its formula.
  for (int64_t j = 0; j < B * T * H; ++j) {
    const int64_t h = j % H;
    EXPECT_NEAR(g.item(j), -std::exp(A_log.item(h)) * dt.item(j), 1e-14);
    for (int64_t p = 0; p < P; ++p)
      EXPECT_NEAR(v.item(j * P + p), x.item(j * P + p) * dt.item(j), 1e-14);
  }
  Tensor dx = Tensor::empty(x.shape(), DType::kF64), ddt = Tensor::empty(dt.shape(), DType::kF64);
  // `+=` into the parameter gradients: start from a known value.
  Tensor dA = Tensor::empty({H}, DType::kF64), dD = Tensor::empty({H}, DType::kF64);
  dA.fill_(0.25);
  dD.fill_(-0.5);
  kernels::ssd_discretise_backward(x, dt, g, A_log, D, Wv, Wg, Wo, dx, ddt, dA, dD);
  Tensor dA0 = dA.clone(), dD0 = dD.clone();
  for (int64_t h = 0; h < H; ++h) {
    dA0.set_item(h, dA.item(h) - 0.25);
    dD0.set_item(h, dD.item(h) + 0.5);
  }
  EXPECT_LT(gradcheck(x, dx, loss), kGradTol);
  EXPECT_LT(gradcheck(dt, ddt, loss), kGradTol);
  EXPECT_LT(gradcheck(A_log, dA0, loss), kGradTol);
  EXPECT_LT(gradcheck(D, dD0, loss), kGradTol);
}

// L = <log_alpha, A> + <w(log_alpha), Bw>: d_total = A - exp(log_alpha) Bw.
TEST(KernelsGsa, SlotWriteGradientMatchesFiniteDifferences) {
  Tensor la = random_tensor({2, 3, 2, 7}, 11);
  for (int64_t i = 0; i < la.numel(); ++i) la.set_item(i, -std::abs(la.item(i)) - 1e-3);
  const Tensor A = random_tensor(la.shape(), 12), Bw = random_tensor(la.shape(), 13);
  auto loss = [&] {
    Tensor w = Tensor::empty(la.shape(), DType::kF64);
    kernels::gsa_slot_write_forward(la, w);
    return dot(la, A) + dot(w, Bw);
  };
  Tensor w = Tensor::empty(la.shape(), DType::kF64);
  kernels::gsa_slot_write_forward(la, w);
  for (int64_t i = 0; i < la.numel(); ++i) EXPECT_NEAR(w.item(i), 1 - std::exp(la.item(i)), 1e-15);
  Tensor d = Tensor::empty(la.shape(), DType::kF64);
  kernels::gsa_slot_write_backward(la, A, Bw, d);
  EXPECT_LT(gradcheck(la, d, loss), kGradTol);
}

TEST(KernelsGsa, SlotSoftmaxMatchesFormulaAndFiniteDifferences) {
  Tensor s = random_tensor({3, 2, 9}, 21, DType::kF64, 3.0);
  const Tensor W = random_tensor(s.shape(), 22);
  auto loss = [&] {
    Tensor p = Tensor::empty(s.shape(), DType::kF64);
    kernels::gsa_slot_softmax_forward(s, p);
    return dot(p, W);
  };
  Tensor p = Tensor::empty(s.shape(), DType::kF64);
  kernels::gsa_slot_softmax_forward(s, p);
  for (int64_t r = 0; r < 6; ++r) {
    double z = 0;
    for (int64_t j = 0; j < 9; ++j) z += std::exp(s.item(r * 9 + j));
    for (int64_t j = 0; j < 9; ++j)
      EXPECT_NEAR(p.item(r * 9 + j), std::exp(s.item(r * 9 + j)) / z, 1e-14);
  }
  Tensor ds = Tensor::empty(s.shape(), DType::kF64);
  kernels::gsa_slot_softmax_backward(p, W, ds);
  EXPECT_LT(gradcheck(s, ds, loss), kGradTol);
}

}  // namespace
}  // namespace linea
