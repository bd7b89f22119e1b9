// A whole model on the GPU: the tiny basic-linear-attention model (embedding, two LL blocks with
// RMSNorm, ELU+1 feature maps, the chunk scan and a dense SwiGLU MLP, tied LM head, cross-entropy)
// moved to cuda:0 with Model::to gives the CPU model's loss and every parameter gradient for the
// same weights and batch. Both keep f32 parameters and activations; the scan feeds q, k, v to the
// tensor cores in bf16, so the gradients agree to a bf16 tolerance (3e-2 of the largest value).
#include "core/config/config.h"
#include "core/model/model.h"
#include "core/util/rng.h"
#include "tests/cuda/cuda_test_util.h"

namespace linea {
namespace {

using namespace testing;

config::Config tiny_gpu_config() {
  // Heads of 64 (the chunk scan takes Dk, Dv in {64, 128}), a chunk that does not divide T on
  // the GPU side (the CUDA scan always uses 64).
  return load_config({}, {"model.vocab_size=96", "model.hidden_size=128",
                          "model.mixer.num_heads=2", "model.mixer.chunk_size=40",
                          "model.channel_mixer.intermediate_size=256", "data.seq_len=200"});
}

data::Batch random_batch(int64_t B, int64_t T, int64_t vocab, uint64_t seed) {
  Rng rng(seed, "batch");
  data::Batch b{Tensor::empty({B, T}, DType::kI32, Device::cpu()),
                Tensor::empty({B, T}, DType::kI32, Device::cpu())};
  for (int64_t i = 0; i < B * T; ++i) {
    b.inputs.data<int32_t>()[i] = static_cast<int32_t>(rng.below(vocab));
    // A few ignored targets (-1), as at document ends.
    b.targets.data<int32_t>()[i] = i % 37 == 5 ? -1 : static_cast<int32_t>(rng.below(vocab));
  }
  return b;
}

TEST(ModelCuda, TinyLinearAttentionModelMatchesCpu) {
  LINEA_REQUIRE_CUDA();
  const config::Config cfg = tiny_gpu_config();
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
  EXPECT_NEAR(loss_gpu, loss_cpu, 1e-3 * loss_cpu) << "loss";

  const auto& pc = cpu.parameters();
  const auto& pg = gpu.parameters();
  ASSERT_EQ(pc.size(), pg.size());
  double worst = 0;
  for (size_t i = 0; i < pc.size(); ++i) {
    ASSERT_EQ(pc[i]->name, pg[i]->name);
    EXPECT_FALSE(pg[i]->grad.device().is_cpu()) << pg[i]->name;
    const double e = rel_err(pg[i]->grad, pc[i]->grad);
    worst = std::max(worst, e);
    EXPECT_LT(e, 3e-2) << pc[i]->name;
  }
  std::printf("loss cpu %.6f gpu %.6f; worst gradient error %.2e over %zu parameters\n", loss_cpu,
              loss_gpu, worst, pc.size());
}

}  // namespace
}  // namespace linea
