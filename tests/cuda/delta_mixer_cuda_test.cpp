// DeltaNet and Gated DeltaNet on the GPU: a tiny model of each (embedding, two L blocks with the
// delta mixer, short convolution off, a dense SwiGLU MLP, tied head, cross-entropy) moved to
// cuda:0 gives the CPU model's loss and every parameter gradient; and the mixer as a LASP-2
// segment (incoming state, exported final state and dense transition, a gradient reaching the
// final state) gives the CPU mixer's outputs, states, transition and gradients, with the
// transition applied on the GPU (segment.h's dense path) as on the CPU.
//
// Tolerances: everything is f32 on both sides (the delta kernels compute in f32 on CUDA cores,
// the matmuls in full f32), so the loss agrees to 1e-5 relative and every gradient to 1e-3 in
// norm (||g - g_cpu|| / ||g_cpu||) and 1e-2 of the tensor's largest value per element; the mixer
// segment (CPU in f64) to the same.
#include <cmath>
#include <cstdio>
#include <string>

#include "core/config/config.h"
#include "core/model/model.h"
#include "core/modules/mixers/segment.h"
#include "core/modules/mixers/token_mixer.h"
#include "core/util/rng.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/mixer_pair.h"

namespace linea {
namespace {

using namespace testing;

constexpr double kTolNorm = 1e-3, kTolMax = 1e-2;

data::Batch random_batch(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  Rng rng(seed, "batch");
  data::Batch b{Tensor::empty({B, T}, DType::kI32, Device::cpu()),
                Tensor::empty({B, T}, DType::kI32, Device::cpu())};
  for (int64_t i = 0; i < B * T; ++i) {
    b.inputs.data<int32_t>()[i] = static_cast<int32_t>(rng.below(vocab));
    b.targets.data<int32_t>()[i] = i % 37 == 5 ? -1 : static_cast<int32_t>(rng.below(vocab));
  }
  return b;
}

// ||g - r|| / ||r|| and the largest element difference over r's largest value.
void expect_grad_close(const Tensor& got, const Tensor& ref, const std::string& what) {
  expect_norm_close(got, ref, kTolNorm, kTolMax, what);
}

std::vector<std::string> delta_sets(const std::string& kind, int head) {
  // A chunk that divides T on the CPU; the CUDA kernels always take 64 (a partial last chunk).
  return {"model.vocab_size=96",
          "model.hidden_size=128",
          "model.mixer.kind=" + kind,
          "model.mixer.num_heads=" + std::to_string(128 / head),
          "model.mixer.head_dim=" + std::to_string(head),
          "model.mixer.short_conv=OFF",
          "model.mixer.chunk_size=40",
          "model.channel_mixer.intermediate_size=256",
          "data.seq_len=200"};
}

void expect_model_matches_cpu(const std::string& kind, int head) {
  SCOPED_TRACE(kind + " heads of " + std::to_string(head));
  std::printf("%s, heads of %d\n", kind.c_str(), head);
  const config::Config cfg = load_config({}, delta_sets(kind, head));
  validate_config(cfg, 1);
  Model cpu(cfg, DType::kF32), gpu(cfg, DType::kF32);
  cpu.init(11);
  gpu.init(11);
  gpu.to(Device::cuda(0));
  ASSERT_FALSE(gpu.device().is_cpu());
  const data::Batch batch = random_batch(2, 200, 96, 5);
  const data::Batch on_gpu{batch.inputs.cuda(0), batch.targets.cuda(0)};
  const LossStats lc = cpu.forward_backward(batch, 1.0);
  const LossStats lg = gpu.forward_backward(on_gpu, 1.0);
  ASSERT_EQ(lc.tokens, lg.tokens);
  const double loss_cpu = lc.loss_sum / lc.tokens, loss_gpu = lg.loss_sum / lg.tokens;
  EXPECT_NEAR(loss_gpu, loss_cpu, 1e-5 * loss_cpu) << "loss";
  std::printf("  loss cpu %.7f gpu %.7f\n", loss_cpu, loss_gpu);
  const auto& pc = cpu.parameters();
  const auto& pg = gpu.parameters();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    ASSERT_EQ(pc[i]->name, pg[i]->name);
    EXPECT_FALSE(pg[i]->grad.device().is_cpu()) << pg[i]->name;
    expect_grad_close(pg[i]->grad, pc[i]->grad, "d " + pc[i]->name);
  }
}

TEST(DeltaModelCuda, TinyDeltaNetModelsMatchCpu) {
  LINEA_REQUIRE_CUDA();
  for (const char* kind : {"DELTANET", "GATED_DELTANET"})
    for (int head : {64, 128}) expect_model_matches_cpu(kind, head);
}

// The mixer as a segment: CPU in f64, cuda:0 in f32, same weights.
TEST(DeltaMixerCuda, SegmentWithStatesAndTransitionMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 128, D = 128;
  for (const char* kind : {"DELTANET", "GATED_DELTANET"}) {
    SCOPED_TRACE(kind);
    std::printf("segment: %s\n", kind);
    std::vector<std::string> sets = delta_sets(kind, 64);
    sets.back() = "data.seq_len=128";
    for (std::string& s : sets)
      if (s == "model.mixer.chunk_size=40") s = "model.mixer.chunk_size=64";  // divides T = 128
    const config::Config cfg = load_config({}, sets);
    MixerPair p = make_mixer_pair(cfg);
    ASSERT_EQ(p.pc.size(), p.pg.size());
    TokenMixer* cpu = p.cpu.get();
    TokenMixer* gpu = p.gpu.get();
    const ParameterList &pc = p.pc, &pg = p.pg;
    const Shape ss{B, 2, 64, 64};
    const Tensor x = random_cuda({B, T, D}, 91, DType::kF32),
                 dy = random_cuda({B, T, D}, 92, DType::kF32);
    const Tensor s_in = random_cuda(ss, 93, DType::kF32, 0.5),
                 ds_out = random_cuda(ss, 94, DType::kF32, 0.5);
    SegmentOut out, out_r;
    SegmentGradOut gout, gout_r;
    Tensor y, dx, applied;
    {
      const DefaultDeviceScope on(Device::cuda(0));
      y = gpu->forward_segment(x, SegmentIn{{s_in}, Tensor()}, &out);
      dx = gpu->backward_segment(dy, SegmentGradIn{{ds_out}}, &gout);
      ASSERT_EQ(out.transitions.size(), 1u);
      applied = transition_apply(out.transitions[0], s_in);
    }
    const Tensor y_r = cpu->forward_segment(ref64(x), SegmentIn{{ref64(s_in)}, Tensor()}, &out_r);
    const Tensor dx_r = cpu->backward_segment(ref64(dy), SegmentGradIn{{ref64(ds_out)}}, &gout_r);
    ASSERT_EQ(out.final_states.size(), 1u);
    ASSERT_EQ(gout.d_states.size(), 1u);
    const Tensor& a = out.transitions[0].dense;
    ASSERT_TRUE(a.defined());
    EXPECT_EQ(a.dtype(), DType::kF32);
    EXPECT_FALSE(a.device().is_cpu());
    EXPECT_FALSE(applied.device().is_cpu());
    expect_grad_close(y, y_r, "y");
    expect_grad_close(out.final_states[0], out_r.final_states[0], "S_out");
    expect_grad_close(a, out_r.transitions[0].dense, "transition A");
    expect_grad_close(applied, transition_apply(out_r.transitions[0], ref64(s_in)),
                      "transition applied to S_in");
    expect_grad_close(dx, dx_r, "dx");
    expect_grad_close(gout.d_states[0], gout_r.d_states[0], "dS_in");
    for (size_t i = 0; i < pg.size(); ++i)
      expect_grad_close(pg[i]->grad, pc[i]->grad, "d " + pg[i]->name);
  }
}

}  // namespace
}  // namespace linea
