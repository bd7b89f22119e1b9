// kernels/moe_permute.h on the CPU (the references of the CUDA kernels) against the MoE layer's
// own CPU permutation (core/modules/moe/token_permutation.h): identical results in f64 on a
// random plan with dropped copies; the byte-row gathers and scatters against direct indexing.
#include "kernels/moe_permute.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/gradcheck.h"
#include "common/kernel_check.h"
#include "core/modules/moe/token_permutation.h"
#include "core/util/rng.h"

namespace linea {
namespace {

using namespace testing;

TEST(MoePermuteKernels, CpuTwinsEqualTokenPermutation) {
  const int64_t N = 19, k = 2, E = 5, D = 7;
  Rng rng(2, "experts");
  std::vector<int32_t> expert(N * k);
  for (int64_t t = 0; t < N; ++t) {
    expert[t * k] = static_cast<int32_t>(rng.below(E));
    expert[t * k + 1] = static_cast<int32_t>((expert[t * k] + 1 + rng.below(E - 1)) % E);
  }
  DispatchPlan plan = plan_dispatch(expert, N, k, E, expert_capacity(0.6, N, k, E));
  ASSERT_GT(plan.dropped, 0);
  upload_plan(plan, Device::cpu());
  const Tensor x = random_tensor({N, D}, 1), dy = random_tensor({N, D}, 2);
  const Tensor w = random_tensor({N * k}, 3);
  const std::vector<double> wv = w.to_vector();

  const Tensor rows = permute_tokens(x, plan);
  Tensor rows2 = Tensor::empty(rows.shape(), DType::kF64, Device::cpu());
  kernels::moe_permute(x, plan.row_copy_index, k, rows2);
  EXPECT_EQ(max_abs_diff(rows, rows2), 0.0);

  const Tensor y = unpermute_combine(rows, plan, wv), y2 = unpermute_combine(rows, plan, w);
  EXPECT_EQ(max_abs_diff(y, y2), 0.0);

  Tensor drows, drows2, dw2;
  std::vector<double> dw;
  unpermute_combine_backward(dy, rows, plan, wv, drows, dw);
  unpermute_combine_backward(dy, rows, plan, w, drows2, dw2);
  EXPECT_EQ(max_abs_diff(drows, drows2), 0.0);
  EXPECT_EQ(max_abs_diff(Tensor::from_vector({N * k}, dw, DType::kF64), dw2), 0.0);

  Tensor dx = random_tensor({N, D}, 4), dx2 = dx.clone();
  permute_tokens_backward(drows, plan, dx);
  kernels::moe_permute_backward(drows, plan.copy_row_index, k, dx2);
  EXPECT_LT(max_abs_diff(dx, dx2), 1e-14);  // the same sums, in token order, not row order
}

TEST(MoePermuteKernels, ByteRowsAndGateOnCpu) {
  const Tensor in = random_tensor({6, 2, 3}, 5, DType::kF32);
  Tensor idx = Tensor::empty({4}, DType::kI64, Device::cpu());
  const int64_t order[] = {5, 0, 3, 2};
  for (int j = 0; j < 4; ++j) idx.data<int64_t>()[j] = order[j];
  Tensor g = Tensor::empty({4, 2, 3}, DType::kF32, Device::cpu());
  kernels::gather_rows(in, idx, g);
  Tensor s = Tensor::zeros({6, 2, 3}, DType::kF32, Device::cpu());
  kernels::scatter_rows(g, idx, s);
  for (int j = 0; j < 4; ++j)
    for (int64_t e = 0; e < 6; ++e) {
      EXPECT_EQ(g.item(j * 6 + e), in.item(order[j] * 6 + e));
      EXPECT_EQ(s.item(order[j] * 6 + e), in.item(order[j] * 6 + e));
    }
  for (int64_t e = 0; e < 6; ++e) EXPECT_EQ(s.item(1 * 6 + e), 0.0);  // row 1: no index
  idx.data<int64_t>()[1] = 6;
  EXPECT_NE(error_message([&] { kernels::gather_rows(in, idx, g); }).find("outside [0, 6)"),
            std::string::npos);

  // Gate: y += sigmoid(z) s; ds = g dy, dlogit = <dy, s> g (1 - g), against direct formulas.
  const Tensor z = random_tensor({3, 1}, 6), sv = random_tensor({3, 4}, 7);
  const Tensor dy = random_tensor({3, 4}, 8);
  Tensor y = Tensor::zeros({3, 4}, DType::kF64, Device::cpu());
  Tensor gate = Tensor::empty({3}, DType::kF64, Device::cpu());
  kernels::moe_gate_add(z, sv, gate, y);
  Tensor ds = Tensor::empty({3, 4}, DType::kF64, Device::cpu());
  Tensor dl = Tensor::empty({3, 1}, DType::kF64, Device::cpu());
  kernels::moe_gate_backward(dy, sv, gate, ds, dl);
  for (int64_t t = 0; t < 3; ++t) {
    const double gt = 1.0 / (1.0 + std::exp(-z.item(t)));
    double dot = 0;
    for (int64_t d = 0; d < 4; ++d) {
      EXPECT_NEAR(y.item(t * 4 + d), gt * sv.item(t * 4 + d), 1e-15);
      EXPECT_NEAR(ds.item(t * 4 + d), gt * dy.item(t * 4 + d), 1e-15);
      dot += dy.item(t * 4 + d) * sv.item(t * 4 + d);
    }
    EXPECT_NEAR(dl.item(t), dot * gt * (1 - gt), 1e-14);
  }
}

}  // namespace
}  // namespace linea
