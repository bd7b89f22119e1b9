// AdamW, gradient norms and the element-wise helpers on CUDA against the CPU reference.
#include "core/optim/adamw.h"
#include "kernels/adamw.h"
#include "kernels/elementwise.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

TEST(AdamWCuda, StepsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (DType gdt : {DType::kF32, DType::kBF16}) {
    const Shape s{1000, 37};
    Tensor p = random_cuda(s, 70, DType::kF32);
    Tensor m = Tensor::zeros(s, DType::kF32, Device::cuda(0)), v = m.clone();
    Tensor p_ref = ref64(p), m_ref = ref64(m), v_ref = ref64(v);
    for (int t = 1; t <= 3; ++t) {
      Tensor g = random_cuda(s, 70 + t, gdt, 0.1);
      kernels::AdamWStep st;
      st.lr = 1e-2;
      st.weight_decay = 0.1;
      st.bias_correction1 = 1 - std::pow(st.beta1, t);
      st.bias_correction2 = 1 - std::pow(st.beta2, t);
      kernels::adamw_step(p, g, m, v, st);
      Tensor g_ref = ref64(g);
      kernels::adamw_step(p_ref, g_ref, m_ref, v_ref, st);
    }
    EXPECT_LT(rel_err(p, p_ref), 1e-6) << dtype_name(gdt);
    EXPECT_LT(rel_err(m, m_ref), 1e-6) << dtype_name(gdt);
    EXPECT_LT(rel_err(v, v_ref), 1e-5) << dtype_name(gdt);
  }
}

TEST(ElementwiseCuda, MatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const Shape s{3, 1001};
    // Each op from the values the GPU holds, so that bf16 roundings do not pile up.
    Tensor a = random_cuda(s, 80, dt), b = random_cuda(s, 81, dt);
    Tensor out = poisoned_cuda(s, dt), out_ref = Tensor::empty(s, DType::kF64);
    kernels::add(a, b, out);
    kernels::add(ref64(a), ref64(b), out_ref);
    EXPECT_LT(rel_err(out, out_ref), tol_for(dt));
    Tensor b64 = ref64(b);
    kernels::axpy(-0.25, a, b);
    kernels::axpy(-0.25, ref64(a), b64);
    EXPECT_LT(rel_err(b, b64), tol_for(dt));
    Tensor a64 = ref64(a);
    kernels::scale(a, 3.0);
    kernels::scale(a64, 3.0);
    EXPECT_LT(rel_err(a, a64), tol_for(dt));
    a64 = ref64(a);
    kernels::add_inplace(a, b);
    kernels::add_inplace(a64, ref64(b));
    EXPECT_LT(rel_err(a, a64), tol_for(dt));
    // The squared norm of exactly the values held: f64 sums on both sides.
    const double sq = kernels::sum_squares(a), sq_ref = kernels::sum_squares(ref64(a));
    EXPECT_NEAR(sq, sq_ref, 1e-12 * sq_ref) << dtype_name(dt);
    EXPECT_TRUE(kernels::all_finite(a));
  }
  Tensor x = random_cuda({5000}, 82, DType::kF32);
  Tensor host = x.cpu();
  host.set_item(4321, std::numeric_limits<double>::infinity());
  EXPECT_FALSE(kernels::all_finite(host.cuda(0)));
}

TEST(ElementwiseCuda, SumSquaresOfManyElements) {
  LINEA_REQUIRE_CUDA();
  Tensor x = random_cuda({3, 1 << 20}, 83, DType::kF32);
  const double sq = kernels::sum_squares(x), sq_ref = kernels::sum_squares(x.cpu());
  EXPECT_NEAR(sq, sq_ref, 1e-12 * sq_ref);
}

TEST(ClipGradNormCuda, MatchesCpu) {
  LINEA_REQUIRE_CUDA();
  Parameter a{"a", random_cuda({300}, 90, DType::kF32), random_cuda({300}, 91, DType::kF32)};
  Parameter b{"b", random_cuda({20, 30}, 92, DType::kF32), random_cuda({20, 30}, 93, DType::kF32)};
  Parameter a_cpu{"a", a.value.cpu(), a.grad.cpu()}, b_cpu{"b", b.value.cpu(), b.grad.cpu()};
  const double norm = clip_grad_norm({&a, &b}, 1.0);
  const double norm_ref = clip_grad_norm({&a_cpu, &b_cpu}, 1.0);
  EXPECT_NEAR(norm, norm_ref, 1e-12 * norm_ref);
  EXPECT_LT(rel_err(a.grad, a_cpu.grad), kTolF32);
  EXPECT_LT(rel_err(b.grad, b_cpu.grad), kTolF32);
}

}  // namespace
}  // namespace linea
