// The MoE channel mixer on the GPU. (1) The row-movement kernels (kernels/moe_permute.h) against
// their CPU twins in f64 on the same values, on random plans with dropped copies, for f32 and
// bf16 rows, row widths that take every load width of the byte gathers. (2) The expert
// dispatcher's device bookkeeping (one-rank NCCL group, CUDA rows) against the CPU dispatcher:
// bit-identical. (3) A whole MoeLayer moved to cuda:0 against the same layer on the CPU (same
// initial values, f32 on both): the chosen experts and load, outputs, aux and z losses, dx and
// every parameter gradient, for both routers, with capacity on and off, shared experts with and
// without their gate, two forwards with a bias update between them. (4) The experts alone
// (GroupedExperts) on bf16 rows against the f32 CPU experts, with empty experts: the path of
// train.precision bf16 (a whole layer cannot be compared there: the router's logits are bf16
// products too, so near-ties pick other experts than on the CPU). (5) The row movement with f32
// tokens and bf16 rows. Tolerances: docs/cuda.md.
#include <algorithm>
#include <map>

#include "core/modules/moe/grouped_experts.h"
#include "core/modules/moe/moe_layer.h"
#include "core/util/rng.h"
#include "kernels/moe_permute.h"
#include "parallel/communicator.h"
#include "parallel/nccl_communicator.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

// A whole layer in f32 on both sides: cuBLAS against the CPU GEMMs, the router in f32 against
// f64 (docs/cuda.md).
constexpr double kTolLayer = 1e-4;
// The experts on bf16 rows with bf16 weight copies against the f32 CPU experts: several bf16
// roundings in a row (weights, gate/up outputs, h, outputs, and the same in the backward).
constexpr double kTolExpertsBF16 = 3e-2;

// A random plan of N tokens with top_k distinct experts each among E, with a capacity.
DispatchPlan random_plan(int64_t N, int64_t k, int64_t E, int64_t capacity, uint64_t seed) {
  Rng rng(seed, "plan");
  std::vector<int32_t> expert(N * k);
  for (int64_t t = 0; t < N; ++t) {
    std::vector<int32_t> all(E);
    for (int32_t e = 0; e < E; ++e) all[e] = e;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t pick = j + static_cast<int64_t>(rng.below(E - j));
      std::swap(all[j], all[pick]);
      expert[t * k + j] = all[j];
    }
  }
  return plan_dispatch(expert, N, k, E, capacity);
}

Tensor cpu_i32(const std::vector<int64_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kI32, Device::cpu());
  for (size_t i = 0; i < v.size(); ++i) t.data<int32_t>()[i] = static_cast<int32_t>(v[i]);
  return t;
}

TEST(MoeCuda, PermutationKernelsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t N = 53, k = 3, E = 7;
  DispatchPlan plan = random_plan(N, k, E, expert_capacity(0.7, N, k, E), 3);
  ASSERT_GT(plan.dropped, 0);
  const int64_t R = plan.rows();
  upload_plan(plan, Device::cuda(0));
  const Tensor rc_cpu = cpu_i32(plan.row_copy), cr_cpu = cpu_i32(plan.copy_row);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int64_t D : {int64_t(67), int64_t(128)}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " D=" + std::to_string(D));
      const double tol = tol_for(dt);
      const Tensor x = random_cuda({N, D}, 10 + D, dt);
      const Tensor w = random_cuda({N * k}, 11, DType::kF32, 0.5);
      const Tensor w64 = ref64(w);

      Tensor rows = poisoned_cuda({R, D}, dt);
      kernels::moe_permute(x, plan.row_copy_index, k, rows);
      Tensor rows_ref = Tensor::empty({R, D}, DType::kF64, Device::cpu());
      kernels::moe_permute(ref64(x), rc_cpu, k, rows_ref);
      EXPECT_EQ(rel_err(rows, rows_ref), 0.0) << "permute";

      const Tensor drows = random_cuda({R, D}, 12, dt);
      Tensor dx = random_cuda({N, D}, 13, dt);
      Tensor dx_ref = ref64(dx);
      kernels::moe_permute_backward(drows, plan.copy_row_index, k, dx);
      kernels::moe_permute_backward(ref64(drows), cr_cpu, k, dx_ref);
      EXPECT_LT(rel_err(dx, dx_ref), tol) << "permute backward";

      const Tensor er = random_cuda({R, D}, 14, dt);
      Tensor y = poisoned_cuda({N, D}, dt);
      kernels::moe_unpermute_combine(er, plan.copy_row_index, w, k, y);
      Tensor y_ref = Tensor::empty({N, D}, DType::kF64, Device::cpu());
      kernels::moe_unpermute_combine(ref64(er), cr_cpu, w64, k, y_ref);
      EXPECT_LT(rel_err(y, y_ref), tol) << "combine";

      const Tensor dy = random_cuda({N, D}, 15, dt);
      Tensor dr = poisoned_cuda({R, D}, dt), dw = poisoned_cuda({N * k}, DType::kF32);
      kernels::moe_unpermute_combine_backward(dy, er, plan.copy_row_index, w, k, dr, dw);
      Tensor dr_ref = Tensor::empty({R, D}, DType::kF64, Device::cpu());
      Tensor dw_ref = Tensor::empty({N * k}, DType::kF64, Device::cpu());
      kernels::moe_unpermute_combine_backward(ref64(dy), ref64(er), cr_cpu, w64, k, dr_ref, dw_ref);
      EXPECT_LT(rel_err(dr, dr_ref), tol) << "combine backward drows";
      EXPECT_LT(rel_err(dw, dw_ref), tol) << "combine backward dweight";
      const Tensor dw_host = dw.cpu();
      for (int64_t c = 0; c < N * k; ++c) {
        if (plan.copy_row[c] < 0) {
          EXPECT_EQ(dw_host.item(c), 0.0) << "dropped copy " << c;
        }
      }

      const Tensor logit = random_cuda({N, 1}, 16, dt, 2.0), s = random_cuda({N, D}, 17, dt);
      Tensor acc = random_cuda({N, D}, 18, dt), gate = poisoned_cuda({N}, DType::kF32);
      Tensor acc_ref = ref64(acc), gate_ref = Tensor::empty({N}, DType::kF64, Device::cpu());
      kernels::moe_gate_add(logit, s, gate, acc);
      kernels::moe_gate_add(ref64(logit), ref64(s), gate_ref, acc_ref);
      EXPECT_LT(rel_err(gate, gate_ref), kTolF32) << "gate";
      EXPECT_LT(rel_err(acc, acc_ref), tol) << "gate add";
      Tensor ds = poisoned_cuda({N, D}, dt), dl = poisoned_cuda({N, 1}, dt);
      Tensor ds_ref = Tensor::empty({N, D}, DType::kF64, Device::cpu());
      Tensor dl_ref = Tensor::empty({N, 1}, DType::kF64, Device::cpu());
      kernels::moe_gate_backward(dy, s, gate, ds, dl);
      kernels::moe_gate_backward(ref64(dy), ref64(s), ref64(gate), ds_ref, dl_ref);
      EXPECT_LT(rel_err(ds, ds_ref), tol) << "gate backward ds";
      EXPECT_LT(rel_err(dl, dl_ref), tol) << "gate backward dlogit";
    }
  }
}

TEST(MoeCuda, ByteRowGatherScatterAreExact) {
  LINEA_REQUIRE_CUDA();
  Rng rng(4, "index");
  const int64_t rows = 41;
  std::vector<int64_t> perm(rows);
  for (int64_t i = 0; i < rows; ++i) perm[i] = i;
  for (int64_t i = rows - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
  const std::vector<int64_t> some(perm.begin(), perm.begin() + 29);  // a partial permutation
  Tensor idx = Tensor::empty({29}, DType::kI64, Device::cpu());
  std::copy(some.begin(), some.end(), idx.data<int64_t>());
  // Row widths of 16 (f32 x 4, 16-byte words), 12 (f32 x 3, 4-byte words), 6 (bf16 x 3, bytes).
  for (auto [dt, width] :
       {std::pair{DType::kF32, 4}, std::pair{DType::kF32, 3}, std::pair{DType::kBF16, 3}}) {
    SCOPED_TRACE(std::string(dtype_name(dt)) + " x " + std::to_string(width));
    const Tensor in = random_cuda({rows, 2, width}, 20 + width, dt);
    Tensor g = poisoned_cuda({29, 2, width}, dt);
    kernels::gather_rows(in, idx.cuda(0), g);
    Tensor g_ref = Tensor::empty({29, 2, width}, dt, Device::cpu());
    kernels::gather_rows(in.cpu(), idx, g_ref);
    EXPECT_EQ(rel_err(g, g_ref), 0.0) << "gather";
    Tensor sc = Tensor::zeros({rows, 2, width}, dt, Device::cuda(0));
    kernels::scatter_rows(g, idx.cuda(0), sc);
    Tensor sc_ref = Tensor::zeros({rows, 2, width}, dt, Device::cpu());
    kernels::scatter_rows(g_ref, idx, sc_ref);
    EXPECT_EQ(rel_err(sc, sc_ref), 0.0) << "scatter";
  }
}

TEST(MoeCuda, ExpertDispatcherOnDeviceRowsEqualsCpu) {
  LINEA_REQUIRE_CUDA();
  parallel::SelfCommunicator self;
  auto nccl = parallel::NcclCommunicator::create(self, 0, "ep");
  parallel::ExpertDispatcher on_cpu(self, 4), on_gpu(*nccl, 4);
  Rng rng(6, "route");
  std::vector<int32_t> route(30);
  for (auto& e : route) e = static_cast<int32_t>(rng.below(5)) - 1;  // -1: dropped
  on_cpu.prepare(route);
  on_gpu.prepare(route, Device::cuda(0));
  EXPECT_EQ(on_cpu.local_expert_counts(), on_gpu.local_expert_counts());
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const Tensor rows = random_cuda({30, 6}, 7, dt);
    const Tensor d_cpu = on_cpu.dispatch(rows.cpu()), d_gpu = on_gpu.dispatch(rows);
    EXPECT_FALSE(d_gpu.device().is_cpu());
    EXPECT_EQ(rel_err(d_gpu, d_cpu), 0.0) << "dispatch";
    const Tensor back_cpu = on_cpu.combine(d_cpu), back_gpu = on_gpu.combine(d_gpu);
    EXPECT_EQ(rel_err(back_gpu, back_cpu), 0.0) << "combine";
  }
}

struct LayerCase {
  const char* name;
  config::MoeConfig::Router router;
  bool renormalize;
  double routed_scaling, capacity_factor;
  int shared;  // shared experts
  bool gate;   // shared expert gate
};

config::MoeConfig layer_config(const LayerCase& c) {
  config::MoeConfig m;
  m.set_num_experts(8);
  m.set_top_k(2);
  m.set_expert_intermediate_size(40);
  m.set_router(c.router);
  m.set_renormalize(c.renormalize);
  m.set_routed_scaling(c.routed_scaling);
  m.set_capacity_factor(c.capacity_factor);
  m.set_num_shared_experts(c.shared);
  m.set_shared_intermediate_size(24);
  m.set_shared_expert_gate(c.gate);
  m.set_aux_loss_coeff(0.1);
  m.set_z_loss_coeff(0.05);
  m.set_bias_update_rate(0.05);
  return m;
}

void expect_layer_matches(const LayerCase& c) {
  SCOPED_TRACE(c.name);
  const double tol = kTolLayer;
  constexpr int64_t D = 48, B = 2, T = 37;
  const config::MoeConfig cfg = layer_config(c);
  MoeLayer cpu("layers.0.mlp", D, cfg, DType::kF32), gpu("layers.0.mlp", D, cfg, DType::kF32);
  cpu.init(5, 0.2, 0.1);
  gpu.init(5, 0.2, 0.1);
  ParameterList pc, pg;
  cpu.collect(pc);
  gpu.collect(pg);
  ASSERT_EQ(pc.size(), pg.size());
  for (Parameter* p : pg) {
    p->value = p->value.to(Device::cuda(0));
    p->grad = p->grad.to(Device::cuda(0));
  }
  const bool sigmoid = c.router == config::MoeConfig::SIGMOID_BIAS;
  if (sigmoid)
    for (int e = 0; e < 8; ++e) cpu.router().bias()[e] = gpu.router().bias()[e] = 0.02 * (e % 3);

  double worst_y = 0, worst_g = 0;
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("forward " + std::to_string(step));
    const Tensor x = random_tensor({B, T, D}, 30 + step, DType::kF32);
    const Tensor dy = random_tensor({B, T, D}, 40 + step, DType::kF32);
    const Tensor y_cpu = cpu.forward(x);
    const Tensor y_gpu = gpu.forward(x.cuda(0));
    ASSERT_FALSE(y_gpu.device().is_cpu());
    ASSERT_EQ(y_gpu.shape(), y_cpu.shape());
    // The same choice of experts, the same plan and drops.
    EXPECT_EQ(gpu.plan().row_copy, cpu.plan().row_copy);
    EXPECT_EQ(gpu.plan().offsets, cpu.plan().offsets);
    EXPECT_EQ(gpu.stats().load, cpu.stats().load);
    EXPECT_EQ(gpu.stats().dropped, cpu.stats().dropped);
    if (c.capacity_factor > 0) {
      EXPECT_GT(cpu.stats().dropped, 0);
    }
    EXPECT_NEAR(gpu.stats().aux_loss, cpu.stats().aux_loss, 1e-6 * cpu.stats().aux_loss);
    EXPECT_NEAR(gpu.stats().z_loss, cpu.stats().z_loss, 1e-5 * cpu.stats().z_loss);
    const double ey = rel_err(y_gpu, y_cpu);
    EXPECT_LT(ey, tol) << "y";
    worst_y = std::max(worst_y, ey);

    cpu.set_aux_grad_scale(0.7);
    gpu.set_aux_grad_scale(0.7);
    const Tensor dx_cpu = cpu.backward(dy);
    const Tensor dx_gpu = gpu.backward(dy.cuda(0));
    const double edx = rel_err(dx_gpu, dx_cpu);
    EXPECT_LT(edx, tol) << "dx";
    worst_g = std::max(worst_g, edx);
    for (size_t i = 0; i < pc.size(); ++i) {
      ASSERT_EQ(pc[i]->name, pg[i]->name);
      EXPECT_FALSE(pg[i]->grad.device().is_cpu()) << pg[i]->name;
      const double e = rel_err(pg[i]->grad, pc[i]->grad);
      EXPECT_LT(e, tol) << pc[i]->name;
      worst_g = std::max(worst_g, e);
    }
    // The bias moves between the forwards: the second one must route with the new bias.
    cpu.router().update_bias(cpu.step_load());
    gpu.router().update_bias(gpu.step_load());
  }
  std::printf("%s: y %.2e, worst of dx and %zu gradients %.2e; aux %.6g z %.6g dropped %lld\n",
              c.name, worst_y, pc.size(), worst_g, gpu.stats().aux_loss, gpu.stats().z_loss,
              static_cast<long long>(gpu.stats().dropped));
}

TEST(MoeCuda, LayerMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  using MC = config::MoeConfig;
  const LayerCase cases[] = {
      {"softmax, renormalize, shared + gate, dropless", MC::SOFTMAX_TOPK, true, 1.0, 0.0, 1, true},
      {"softmax, scaled, capacity 0.6, no shared", MC::SOFTMAX_TOPK, false, 1.7, 0.6, 0, false},
      {"sigmoid, 2 shared, no gate, capacity 1.0", MC::SIGMOID_BIAS, true, 2.5, 1.0, 2, false},
      {"sigmoid, shared + gate, dropless", MC::SIGMOID_BIAS, true, 1.0, 0.0, 1, true},
  };
  for (const LayerCase& c : cases) expect_layer_matches(c);
}

TEST(MoeCuda, GroupedExpertsOnBf16RowsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  constexpr int64_t D = 48, F = 40;
  const std::vector<int64_t> counts = {5, 0, 17, 1, 0, 30, 9, 0};
  const int64_t E = static_cast<int64_t>(counts.size()), R = 62;
  GroupedExperts cpu("experts", 0, E, D, F, DType::kF32), gpu("experts", 0, E, D, F, DType::kF32);
  cpu.init(4, 0.2, 0.1);
  gpu.init(4, 0.2, 0.1);
  ParameterList pc, pg;
  cpu.collect(pc);
  gpu.collect(pg);
  ASSERT_EQ(pc.size(), static_cast<size_t>(3 * E));
  for (size_t i = 0; i < pg.size(); ++i) {
    // Gradients that already hold values: the backward adds.
    pc[i]->grad = random_tensor(pc[i]->value.shape(), 50 + i, DType::kF32, 0.1);
    pg[i]->value = pg[i]->value.to(Device::cuda(0));
    pg[i]->grad = pc[i]->grad.to(Device::cuda(0));
  }
  // bf16 rows, and the CPU reference on the same (rounded) values in f32.
  const Tensor rows = random_tensor({R, D}, 60, DType::kF64).to(DType::kBF16);
  const Tensor dy = random_tensor({R, D}, 61, DType::kF64).to(DType::kBF16);
  const Tensor y_gpu = gpu.forward(rows.cuda(0), counts);
  const Tensor y_cpu = cpu.forward(rows.to(DType::kF32), counts);
  EXPECT_EQ(y_gpu.dtype(), DType::kBF16);
  const double ey = rel_err(y_gpu, y_cpu);
  EXPECT_LT(ey, kTolExpertsBF16) << "y";
  const Tensor dx_gpu = gpu.backward(dy.cuda(0), counts);
  const Tensor dx_cpu = cpu.backward(dy.to(DType::kF32), counts);
  EXPECT_EQ(dx_gpu.dtype(), DType::kBF16);
  const double edx = rel_err(dx_gpu, dx_cpu);
  EXPECT_LT(edx, kTolExpertsBF16) << "dx";
  double worst = 0;
  for (size_t i = 0; i < pc.size(); ++i) {
    EXPECT_EQ(pg[i]->grad.dtype(), DType::kF32) << pg[i]->name;
    const double e = rel_err(pg[i]->grad, pc[i]->grad);
    EXPECT_LT(e, kTolExpertsBF16) << pc[i]->name;
    worst = std::max(worst, e);
  }
  // Empty experts keep their gradients exactly.
  EXPECT_EQ(rel_err(pg[3]->grad, pc[3]->grad), 0.0) << pc[3]->name;
  // The backward released what the forward saved.
  EXPECT_THROW(gpu.backward(dy.cuda(0), counts), Error);
  std::printf("bf16 experts: y %.2e, dx %.2e, worst gradient %.2e\n", ey, edx, worst);
}

// f32 tokens, bf16 expert rows: the permutation rounds once, the combine and the permutation's
// backward sum bf16 rows in f32 into f32 tokens, the combine's backward takes f32 dy.
TEST(MoeCuda, MixedDtypeRowMovementMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t N = 41, k = 3, E = 6, D = 72;
  DispatchPlan plan = random_plan(N, k, E, expert_capacity(0.8, N, k, E), 8);
  const int64_t R = plan.rows();
  upload_plan(plan, Device::cuda(0));
  const Tensor rc_cpu = cpu_i32(plan.row_copy), cr_cpu = cpu_i32(plan.copy_row);
  const Tensor x = random_cuda({N, D}, 1, DType::kF32);
  Tensor rows = poisoned_cuda({R, D}, DType::kBF16);
  kernels::moe_permute(x, plan.row_copy_index, k, rows);
  Tensor rows_ref = Tensor::empty({R, D}, DType::kF64, Device::cpu());
  kernels::moe_permute(ref64(x.to(DType::kBF16)), rc_cpu, k, rows_ref);
  EXPECT_EQ(rel_err(rows, rows_ref), 0.0) << "permute: one rounding, like to(bf16)";

  const Tensor w = random_cuda({N * k}, 2, DType::kF32, 0.5);
  const Tensor er = random_cuda({R, D}, 3, DType::kBF16);
  Tensor y = poisoned_cuda({N, D}, DType::kF32);
  kernels::moe_unpermute_combine(er, plan.copy_row_index, w, k, y);
  Tensor y_ref = Tensor::empty({N, D}, DType::kF64, Device::cpu());
  kernels::moe_unpermute_combine(ref64(er), cr_cpu, ref64(w), k, y_ref);
  EXPECT_LT(rel_err(y, y_ref), kTolF32) << "combine into f32";

  const Tensor drows = random_cuda({R, D}, 4, DType::kBF16);
  Tensor dx = random_cuda({N, D}, 5, DType::kF32);
  Tensor dx_ref = ref64(dx);
  kernels::moe_permute_backward(drows, plan.copy_row_index, k, dx);
  kernels::moe_permute_backward(ref64(drows), cr_cpu, k, dx_ref);
  EXPECT_LT(rel_err(dx, dx_ref), kTolF32) << "permute backward into f32";

  const Tensor dy = random_cuda({N, D}, 6, DType::kF32);
  Tensor dr = poisoned_cuda({R, D}, DType::kBF16), dw = poisoned_cuda({N * k}, DType::kF32);
  kernels::moe_unpermute_combine_backward(dy, er, plan.copy_row_index, w, k, dr, dw);
  Tensor dr_ref = Tensor::empty({R, D}, DType::kF64, Device::cpu());
  Tensor dw_ref = Tensor::empty({N * k}, DType::kF64, Device::cpu());
  kernels::moe_unpermute_combine_backward(ref64(dy), ref64(er), cr_cpu, ref64(w), k, dr_ref,
                                          dw_ref);
  EXPECT_LT(rel_err(dr, dr_ref), kTolBF16) << "combine backward drows (bf16)";
  EXPECT_LT(rel_err(dw, dw_ref), kTolF32) << "combine backward dweight (f32)";
}

}  // namespace
}  // namespace linea
