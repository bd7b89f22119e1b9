// RMSNorm, the L2 norm, feature maps, SwiGLU and RoPE on CUDA against the CPU reference in f64.
#include "kernels/feature_map.h"
#include "kernels/l2norm.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

TEST(RmsNormCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 200;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t d : {64, 1000, 1001, 4096}) {  // 1001: no 16-byte packs
      for (bool weighted : {true, false}) {
        const int64_t rows = 301;
        Tensor x = random_cuda({rows, d}, ++seed, dt, 2.0);
        Tensor w = weighted ? random_cuda({d}, ++seed, dt) : Tensor();
        Tensor y = poisoned_cuda({rows, d}, dt);
        Tensor rstd = poisoned_cuda({rows}, DType::kF32);
        kernels::rmsnorm_forward(x, w, 1e-6, y, rstd);
        Tensor y_ref = Tensor::empty({rows, d}, DType::kF64);
        Tensor rstd_ref = Tensor::empty({rows}, DType::kF64);
        const Tensor w64 = weighted ? ref64(w) : Tensor();
        kernels::rmsnorm_forward(ref64(x), w64, 1e-6, y_ref, rstd_ref);
        const std::string what = std::string(dtype_name(dt)) + " D " + std::to_string(d) +
                                 (weighted ? " weighted" : " weightless");
        EXPECT_LT(rel_err(y, y_ref), tol_for(dt)) << what;
        EXPECT_LT(rel_err(rstd, rstd_ref), kTolF32) << what;

        Tensor dy = random_cuda({rows, d}, ++seed, dt);
        Tensor dx = poisoned_cuda({rows, d}, dt);
        Tensor dw = weighted ? random_cuda({d}, ++seed, DType::kF32) : Tensor();
        Tensor dw_ref = weighted ? ref64(dw) : Tensor();
        Tensor dx_ref = Tensor::empty({rows, d}, DType::kF64);
        kernels::rmsnorm_backward(x, w, rstd, dy, dx, dw);
        kernels::rmsnorm_backward(ref64(x), w64, rstd_ref, ref64(dy), dx_ref, dw_ref);
        EXPECT_LT(rel_err(dx, dx_ref), tol_for(dt)) << what;
        if (weighted) {
          EXPECT_LT(rel_err(dw, dw_ref), 1e-4) << what;
        }
      }
    }
  }
}

TEST(RmsNormCuda, BackwardInPlaceOverDy) {
  LINEA_REQUIRE_CUDA();
  Tensor x = random_cuda({17, 256}, 1, DType::kF32);
  Tensor w = random_cuda({256}, 2, DType::kF32);
  Tensor y = Tensor::empty({17, 256}, DType::kF32, Device::cuda(0));
  Tensor rstd = Tensor::empty({17}, DType::kF32, Device::cuda(0));
  kernels::rmsnorm_forward(x, w, 1e-5, y, rstd);
  Tensor dy = random_cuda({17, 256}, 3, DType::kF32);
  Tensor dx = Tensor::empty({17, 256}, DType::kF32, Device::cuda(0));
  Tensor dw1 = Tensor::zeros({256}, DType::kF32, Device::cuda(0)), dw2 = dw1.clone();
  kernels::rmsnorm_backward(x, w, rstd, dy, dx, dw1);
  kernels::rmsnorm_backward(x, w, rstd, dy, dy, dw2);  // dx = dy
  EXPECT_EQ(max_abs_diff(dy.cpu(), dx.cpu()), 0.0);
  EXPECT_EQ(max_abs_diff(dw1.cpu(), dw2.cpu()), 0.0);
}

TEST(L2NormCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  uint64_t seed = 300;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t d : {128, 33}) {  // 33: no 16-byte packs
      const Shape s{4, 50, 3, d};
      Tensor x = random_cuda(s, ++seed, dt);
      Tensor y = poisoned_cuda(s, dt), rstd = poisoned_cuda({4, 50, 3}, DType::kF32);
      kernels::l2norm_forward(x, 1e-6, y, rstd);
      Tensor y_ref = Tensor::empty(s, DType::kF64),
             rstd_ref = Tensor::empty({4, 50, 3}, DType::kF64);
      kernels::l2norm_forward(ref64(x), 1e-6, y_ref, rstd_ref);
      EXPECT_LT(rel_err(y, y_ref), tol_for(dt)) << dtype_name(dt) << " D " << d;
      EXPECT_LT(rel_err(rstd, rstd_ref), kTolF32) << dtype_name(dt) << " D " << d;
      Tensor dy = random_cuda(s, ++seed, dt);
      Tensor dx = poisoned_cuda(s, dt), dx_ref = Tensor::empty(s, DType::kF64);
      kernels::l2norm_backward(x, rstd, dy, dx);
      kernels::l2norm_backward(ref64(x), rstd_ref, ref64(dy), dx_ref);
      EXPECT_LT(rel_err(dx, dx_ref), tol_for(dt)) << dtype_name(dt) << " D " << d;
    }
  }
}

TEST(FeatureMapCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  using kernels::FeatureMap;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (FeatureMap f : {FeatureMap::kIdentity, FeatureMap::kEluPlusOne, FeatureMap::kRelu}) {
      const Shape s{5, 77, 9};  // 3465 elements: packs and a tail
      Tensor x = random_cuda(s, 310, dt, 2.0), dy = random_cuda(s, 311, dt);
      Tensor y = poisoned_cuda(s, dt), dx = poisoned_cuda(s, dt);
      kernels::feature_map_forward(f, x, y);
      kernels::feature_map_backward(f, x, dy, dx);
      Tensor y_ref = Tensor::empty(s, DType::kF64), dx_ref = Tensor::empty(s, DType::kF64);
      kernels::feature_map_forward(f, ref64(x), y_ref);
      kernels::feature_map_backward(f, ref64(x), ref64(dy), dx_ref);
      const int fi = static_cast<int>(f);
      EXPECT_LT(rel_err(y, y_ref), tol_for(dt)) << dtype_name(dt) << " map " << fi;
      EXPECT_LT(rel_err(dx, dx_ref), tol_for(dt)) << dtype_name(dt) << " map " << fi;
      // An unaligned view takes the element-by-element path.
      Tensor ys = y.slice(1, 5);
      ys.fill_(std::nan(""));
      kernels::feature_map_forward(f, x.slice(1, 5), ys);
      EXPECT_LT(rel_err(ys, y_ref.slice(1, 5)), tol_for(dt)) << dtype_name(dt) << " map " << fi;
    }
  }
}

TEST(SwigluCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const Shape s{7, 33, 129};
    Tensor g = random_cuda(s, 10, dt, 3.0), u = random_cuda(s, 11, dt), dh = random_cuda(s, 12, dt);
    Tensor h = poisoned_cuda(s, dt), dg = poisoned_cuda(s, dt), du = poisoned_cuda(s, dt);
    kernels::swiglu_forward(g, u, h);
    kernels::swiglu_backward(g, u, dh, dg, du);
    Tensor h_ref = Tensor::empty(s, DType::kF64), dg_ref = Tensor::empty(s, DType::kF64),
           du_ref = Tensor::empty(s, DType::kF64);
    kernels::swiglu_forward(ref64(g), ref64(u), h_ref);
    kernels::swiglu_backward(ref64(g), ref64(u), ref64(dh), dg_ref, du_ref);
    EXPECT_LT(rel_err(h, h_ref), tol_for(dt)) << dtype_name(dt);
    EXPECT_LT(rel_err(dg, dg_ref), tol_for(dt)) << dtype_name(dt);
    EXPECT_LT(rel_err(du, du_ref), tol_for(dt)) << dtype_name(dt);
    // Views that start off a 16-byte boundary take the element-by-element path.
    Tensor gs = g.slice(1, 7), us = u.slice(1, 7), hs = h.slice(1, 7);
    hs.fill_(std::nan(""));
    kernels::swiglu_forward(gs, us, hs);
    EXPECT_LT(rel_err(hs, h_ref.slice(1, 7)), tol_for(dt)) << dtype_name(dt) << " slice";
  }
}

TEST(RopeCuda, ForwardBackwardMatchCpuWithOffset) {
  LINEA_REQUIRE_CUDA();
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t d : {64, 20}) {  // 20: D/2 = 10 is no whole 16-byte piece
      const Shape s{2, 300, 3, d};
      kernels::RopeParams p;
      p.theta = 500000.0;
      p.pos_offset = 70000;  // a late sequence-parallel shard: large angles must stay exact
      Tensor x = random_cuda(s, 20, dt);
      Tensor y = poisoned_cuda(s, dt);
      kernels::rope_forward(x, p, y);
      Tensor y_ref = Tensor::empty(s, DType::kF64);
      kernels::rope_forward(ref64(x), p, y_ref);
      EXPECT_LT(rel_err(y, y_ref), tol_for(dt)) << dtype_name(dt);
      // Backward in place: dx = R^T dy written over dy.
      Tensor dy = random_cuda(s, 21, dt);
      Tensor dx_ref = Tensor::empty(s, DType::kF64);
      kernels::rope_backward(ref64(dy), p, dx_ref);
      kernels::rope_backward(dy, p, dy);
      EXPECT_LT(rel_err(dy, dx_ref), tol_for(dt)) << dtype_name(dt);
    }
  }
}

}  // namespace
}  // namespace linea
