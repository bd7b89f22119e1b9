// Mixture-of-Memories on the GPU: the MOM mixer built on the CPU (f64) and on cuda:0 (f32) with
// the same weights, for memories of the GLA, SIMPLE_GLA, LINEAR_ATTENTION and GATED_DELTANET
// kinds (the shared memory and the short convolutions on, their defaults), compared in outputs,
// input gradients and every parameter gradient, plainly and as a segment with incoming states.
// The routing is chosen on the host from the logits the GPU computed in f32; the CPU chooses from
// its f64 logits: with random weights no two logits of a token are within the f32 rounding, so
// both choose the same memories (the test would show a different route as a large error).
//
// Tolerances: the memories' scans feed bf16 operands to the tensor cores (docs/cuda.md), so, as
// for the decay mixers (tests/cuda/decay_mixer_cuda_test.cpp), ||g - g_cpu|| / ||g_cpu|| < 2e-2
// and no element off by more than 6e-2 of the tensor's largest; the query and gate projections,
// whose gradients are small remainders of cancelling terms, 1.5e-1 and 2e-1. The delta memories
// run in f32 on CUDA cores.
#include <cmath>
#include <cstdio>
#include <string>

#include "core/config/config.h"
#include "core/modules/mixers/token_mixer.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/mixer_pair.h"

namespace linea {
namespace {

using namespace testing;
using MC = config::MixerConfig;

config::Config mom_config(MC::Kind memory) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(128);
  m->set_num_layers(1);
  m->set_layer_pattern("L");
  auto* mx = m->mutable_mixer();
  mx->set_kind(MC::MOM);
  mx->set_memory_kind(memory);
  mx->set_num_heads(2);
  mx->set_head_dim(64);
  mx->set_chunk_size(64);
  mx->set_num_memories(4);
  mx->set_memory_top_k(2);
  cfg.mutable_data()->set_seq_len(192);
  return cfg;
}

MixerPair make_pair(MC::Kind memory) { return make_mixer_pair(mom_config(memory)); }

void expect_param_grads_close(const MixerPair& p) {
  for (size_t i = 0; i < p.pg.size(); ++i) {
    ASSERT_EQ(p.pc[i]->name, p.pg[i]->name);
    EXPECT_FALSE(p.pg[i]->grad.device().is_cpu()) << p.pg[i]->name;
    const std::string& n = p.pg[i]->name;
    const bool loose =
        n.find("q_proj") != std::string::npos || n.find("gate") != std::string::npos ||
        n.find("gk") != std::string::npos || n.find("a_proj") != std::string::npos ||
        n.find("b_proj") != std::string::npos || n.find("A_log") != std::string::npos ||
        n.find("dt_bias") != std::string::npos;
    expect_norm_close(p.pg[i]->grad, p.pc[i]->grad, loose ? 1.5e-1 : 2e-2, loose ? 2e-1 : 6e-2,
                      "d " + n);
  }
}

const MC::Kind kMemories[] = {MC::GLA, MC::SIMPLE_GLA, MC::LINEAR_ATTENTION, MC::GATED_DELTANET};

TEST(MomCuda, ForwardBackwardMatchCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 192, D = 128;
  for (MC::Kind memory : kMemories) {
    SCOPED_TRACE(MC::Kind_Name(memory));
    std::printf("MOM of %s memories\n", MC::Kind_Name(memory).c_str());
    MixerPair p = make_pair(memory);
    const Tensor x = random_cuda({B, T, D}, 81, DType::kF32),
                 dy = random_cuda({B, T, D}, 82, DType::kF32);
    Tensor y, dx;
    {
      const DefaultDeviceScope on(Device::cuda(0));
      y = p.gpu->forward(x);
      dx = p.gpu->backward(dy);
    }
    ASSERT_FALSE(y.device().is_cpu());
    const Tensor y_r = p.cpu->forward(ref64(x));
    const Tensor dx_r = p.cpu->backward(ref64(dy));
    expect_norm_close(y, y_r, 2e-2, 6e-2, "y");
    expect_norm_close(dx, dx_r, 2e-2, 6e-2, "dx");
    expect_param_grads_close(p);
  }
}

TEST(MomCuda, SegmentWithStatesMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const int64_t B = 2, T = 128, D = 128;
  for (MC::Kind memory : {MC::GLA, MC::GATED_DELTANET}) {
    SCOPED_TRACE(MC::Kind_Name(memory));
    std::printf("segment: MOM of %s memories\n", MC::Kind_Name(memory).c_str());
    MixerPair p = make_pair(memory);
    const int n = p.gpu->num_states();
    ASSERT_EQ(n, 5);  // four memories and the shared one
    std::vector<Tensor> s_in, ds_out, s_in_r, ds_out_r;
    for (int i = 0; i < n; ++i) {
      s_in.push_back(random_cuda({B, 2, 64, 64}, 90 + i, DType::kF32, 0.5));
      ds_out.push_back(random_cuda({B, 2, 64, 64}, 100 + i, DType::kF32, 0.5));
      s_in_r.push_back(ref64(s_in.back()));
      ds_out_r.push_back(ref64(ds_out.back()));
    }
    const Tensor x = random_cuda({B, T, D}, 91, DType::kF32),
                 dy = random_cuda({B, T, D}, 92, DType::kF32);
    SegmentOut out, out_r;
    SegmentGradOut gout, gout_r;
    Tensor y, dx;
    {
      const DefaultDeviceScope on(Device::cuda(0));
      y = p.gpu->forward_segment(x, SegmentIn{s_in, Tensor()}, &out);
      dx = p.gpu->backward_segment(dy, SegmentGradIn{ds_out}, &gout);
    }
    const Tensor y_r = p.cpu->forward_segment(ref64(x), SegmentIn{s_in_r, Tensor()}, &out_r);
    const Tensor dx_r = p.cpu->backward_segment(ref64(dy), SegmentGradIn{ds_out_r}, &gout_r);
    expect_norm_close(y, y_r, 2e-2, 6e-2, "y");
    expect_norm_close(dx, dx_r, 2e-2, 6e-2, "dx");
    ASSERT_EQ(out.final_states.size(), size_t(n));
    ASSERT_EQ(gout.d_states.size(), size_t(n));
    for (int i = 0; i < n; ++i) {
      expect_norm_close(out.final_states[i], out_r.final_states[i], 2e-2, 6e-2,
                        "S_out " + std::to_string(i));
      expect_norm_close(gout.d_states[i], gout_r.d_states[i], 2e-2, 6e-2,
                        "dS_in " + std::to_string(i));
    }
    expect_param_grads_close(p);
  }
}

}  // namespace
}  // namespace linea
