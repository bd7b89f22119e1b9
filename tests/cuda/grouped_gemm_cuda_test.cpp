// The grouped linear products (kernels/grouped_gemm.h) and the packed SwiGLU on CUDA against
// their CPU references in f64 on the same values: random row counts with empty groups (first,
// last and in between), f32 and bf16 operands, the weight gradient accumulated into f32 (and
// bf16) buffers that already hold values, split into 1 or 2 parts, both the grouped cuBLAS call
// and the per-group loop (LINEA_GROUPED_GEMM=loop), and more than 128 groups (two grouped calls).
#include <cstdlib>

#include "core/util/rng.h"
#include "kernels/grouped_gemm.h"
#include "kernels/swiglu.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

// Every fourth group (and the first and last) empty, the others 1..max rows.
std::vector<int64_t> random_counts(int64_t groups, int64_t max, uint64_t seed) {
  Rng rng(seed, "counts");
  std::vector<int64_t> c(groups);
  for (int64_t e = 0; e < groups; ++e)
    c[e] = (e % 4 == 0 || e == groups - 1) ? 0 : 1 + static_cast<int64_t>(rng.below(max));
  return c;
}

int64_t total(const std::vector<int64_t>& c) {
  int64_t s = 0;
  for (int64_t v : c) s += v;
  return s;
}

// LINEA_GROUPED_GEMM set for a scope (restored after).
class GroupedMode {
 public:
  explicit GroupedMode(bool loop) {
    if (loop)
      setenv("LINEA_GROUPED_GEMM", "loop", 1);
    else
      unsetenv("LINEA_GROUPED_GEMM");
  }
  ~GroupedMode() { unsetenv("LINEA_GROUPED_GEMM"); }
};

void check_grouped(int64_t groups, int64_t out, int64_t in, int64_t parts, DType dt, DType dw_dt,
                   bool loop, uint64_t seed) {
  SCOPED_TRACE(std::string(dtype_name(dt)) + " dw " + dtype_name(dw_dt) + " groups " +
               std::to_string(groups) + " out " + std::to_string(out) + " in " +
               std::to_string(in) + " parts " + std::to_string(parts) +
               (loop ? " loop" : " grouped"));
  const GroupedMode mode(loop);
  const std::vector<int64_t> counts = random_counts(groups, 70, seed);
  const int64_t R = total(counts), o = out / parts;
  const Tensor x = random_cuda({R, in}, seed + 1, dt);
  const Tensor w = random_cuda({groups, out, in}, seed + 2, dt, 0.2);
  const Tensor dy = random_cuda({R, out}, seed + 3, dt);

  Tensor y = poisoned_cuda({R, out}, dt);
  kernels::grouped_linear_forward(x, w, counts, y);
  Tensor y_ref = Tensor::empty({R, out}, DType::kF64, Device::cpu());
  kernels::grouped_linear_forward(ref64(x), ref64(w), counts, y_ref);
  EXPECT_LT(rel_err(y, y_ref), tol_for(dt)) << "y";

  std::vector<Tensor> dw, dw_ref;
  for (int64_t i = 0; i < groups * parts; ++i) {
    dw.push_back(random_cuda({o, in}, seed + 10 + i, dw_dt));
    dw_ref.push_back(ref64(dw.back()));
  }
  Tensor dx = poisoned_cuda({R, in}, dt);
  kernels::grouped_linear_backward(x, w, dy, counts, dx, dw);
  Tensor dx_ref = Tensor::empty({R, in}, DType::kF64, Device::cpu());
  kernels::grouped_linear_backward(ref64(x), ref64(w), ref64(dy), counts, dx_ref, dw_ref);
  EXPECT_LT(rel_err(dx, dx_ref), tol_for(dt)) << "dx";
  double worst = 0;
  for (size_t i = 0; i < dw.size(); ++i) worst = std::max(worst, rel_err(dw[i], dw_ref[i]));
  EXPECT_LT(worst, tol_for(dw_dt)) << "dw";

  // Without dx: only the gradients (added a second time).
  Tensor none;
  kernels::grouped_linear_backward(x, w, dy, counts, none, dw);
  kernels::grouped_linear_backward(ref64(x), ref64(w), ref64(dy), counts, none, dw_ref);
  worst = 0;
  for (size_t i = 0; i < dw.size(); ++i) worst = std::max(worst, rel_err(dw[i], dw_ref[i]));
  EXPECT_LT(worst, tol_for(dw_dt)) << "dw, second accumulation";
}

TEST(GroupedGemmCuda, ForwardAndBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 100;
  for (bool loop : {false, true}) {
    check_grouped(9, 96, 72, 2, DType::kF32, DType::kF32, loop, seed += 50);
    check_grouped(9, 96, 72, 2, DType::kBF16, DType::kF32, loop, seed += 50);
    check_grouped(6, 40, 130, 1, DType::kBF16, DType::kBF16, loop, seed += 50);
    check_grouped(5, 33, 17, 1, DType::kF32, DType::kF32, loop, seed += 50);  // odd sizes
  }
  // More than one grouped call (128 groups each).
  check_grouped(131, 16, 24, 1, DType::kBF16, DType::kF32, false, seed += 50);
}

TEST(GroupedGemmCuda, AllGroupsEmptyAndBadShapes) {
  LINEA_REQUIRE_CUDA();
  const std::vector<int64_t> counts = {0, 0, 0};
  const Tensor x = Tensor::empty({0, 8}, DType::kBF16, Device::cuda(0));
  const Tensor w = random_cuda({3, 4, 8}, 1, DType::kBF16);
  Tensor y = Tensor::empty({0, 4}, DType::kBF16, Device::cuda(0));
  kernels::grouped_linear_forward(x, w, counts, y);  // nothing to do, no error
  std::vector<Tensor> dw;
  for (int i = 0; i < 3; ++i) dw.push_back(random_cuda({4, 8}, 2 + i, DType::kF32));
  const Tensor before = ref64(dw[1]);
  Tensor dx = Tensor::empty({0, 8}, DType::kBF16, Device::cuda(0));
  kernels::grouped_linear_backward(x, w, y, counts, dx, dw);
  EXPECT_EQ(rel_err(dw[1], before), 0.0) << "empty groups add nothing";

  // The counts must sum to x's rows and match w's groups.
  const Tensor x5 = random_cuda({5, 8}, 9, DType::kBF16);
  Tensor y5 = Tensor::empty({5, 4}, DType::kBF16, Device::cuda(0));
  EXPECT_THROW(kernels::grouped_linear_forward(x5, w, {1, 2, 3}, y5), Error);
  EXPECT_THROW(kernels::grouped_linear_forward(x5, w, {2, 3}, y5), Error);
  EXPECT_THROW(kernels::grouped_linear_forward(x5, w, {2, 4, -1}, y5), Error);
}

TEST(SwigluPackedCuda, MatchesCpu) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t F : {int64_t(64), int64_t(13)}) {  // packs of 16 bytes, and element by element
      SCOPED_TRACE(std::string(dtype_name(dt)) + " F=" + std::to_string(F));
      const int64_t R = 37;
      const Tensor gu = random_cuda({R, 2 * F}, 5 + F, dt, 2.0);
      const Tensor dh = random_cuda({R, F}, 6 + F, dt);
      Tensor h = poisoned_cuda({R, F}, dt);
      kernels::swiglu_packed_forward(gu, h);
      Tensor h_ref = Tensor::empty({R, F}, DType::kF64, Device::cpu());
      kernels::swiglu_packed_forward(ref64(gu), h_ref);
      EXPECT_LT(rel_err(h, h_ref), tol_for(dt)) << "h";
      Tensor dgu = poisoned_cuda({R, 2 * F}, dt);
      kernels::swiglu_packed_backward(gu, dh, dgu);
      Tensor dgu_ref = Tensor::empty({R, 2 * F}, DType::kF64, Device::cpu());
      kernels::swiglu_packed_backward(ref64(gu), ref64(dh), dgu_ref);
      EXPECT_LT(rel_err(dgu, dgu_ref), tol_for(dt)) << "dgu";
      // In place over gu.
      Tensor over = gu.clone();
      kernels::swiglu_packed_backward(over, dh, over);
      EXPECT_EQ(rel_err(over, dgu), 0.0) << "in place";
    }
  }
}

}  // namespace
}  // namespace linea
