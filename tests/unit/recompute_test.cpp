// Activation recomputation (train.recompute) and the chunked LM head change memory, not results:
// for every mixer config and the MoE and hybrid configs, selective and full recomputation give
// bit-identical losses, MoE losses, load statistics and gradients to keeping everything, over two
// micro-batches accumulated; the head split into chunks of rows matches one chunk to rounding.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/gradcheck.h"
#include "common/kernel_check.h"
#include "core/config/config.h"
#include "core/model/model.h"
#include "core/modules/moe/moe_layer.h"
#include "core/util/rng.h"

namespace linea {
namespace {

std::string source_path(const std::string& rel) {
  return std::string(LINEA_SOURCE_DIR) + "/" + rel;
}

std::vector<std::string> configs_under_test() {
  std::vector<std::string> out = {"configs/tiny.pbtxt", "configs/moe_tiny.pbtxt",
                                  "configs/hybrid_tiny.pbtxt"};
  for (const auto& e : std::filesystem::directory_iterator(source_path("configs/mixers")))
    out.push_back("configs/mixers/" + e.path().filename().string());
  std::sort(out.begin() + 3, out.end());
  return out;
}

data::Batch random_batch(int64_t B, int64_t T, int32_t vocab, uint64_t seed) {
  Rng rng(seed);
  data::Batch b{Tensor::empty({B, T}, DType::kI32), Tensor::empty({B, T}, DType::kI32)};
  for (int64_t i = 0; i < B * T; ++i) {
    b.inputs.data<int32_t>()[i] = static_cast<int32_t>(rng.below(vocab));
    b.targets.data<int32_t>()[i] = (i % 7 == 2) ? -1 : static_cast<int32_t>(rng.below(vocab));
  }
  return b;
}

struct RunResult {
  std::vector<LossStats> stats;
  std::vector<Tensor> grads;
  std::vector<std::vector<double>> step_load;
};

RunResult run(const std::string& file, const std::string& recompute, int64_t head_chunk_rows = 0) {
  config::Config cfg = load_config({source_path(file)}, {"train.recompute=" + recompute});
  const int64_t T = std::min<int64_t>(cfg.data().seq_len(), 64);
  Model model(cfg, DType::kF64);
  model.init(11);
  model.set_head_chunk_rows(head_chunk_rows);
  model.zero_grad();
  RunResult r;
  for (uint64_t mb = 0; mb < 2; ++mb)
    r.stats.push_back(model.forward_backward(
        random_batch(2, T, static_cast<int32_t>(cfg.model().vocab_size()), 5 + mb), 0.5, 0.5));
  for (const Parameter* p : model.parameters()) r.grads.push_back(p->grad.clone());
  for (const MoeLayer* m : model.moe_layers()) r.step_load.push_back(m->step_load());
  return r;
}

class Recompute : public ::testing::TestWithParam<std::string> {};

TEST_P(Recompute, SelectiveAndFullEqualNoneBitForBit) {
  const RunResult none = run(GetParam(), "none");
  for (const std::string mode : {"selective", "full"}) {
    SCOPED_TRACE(mode);
    const RunResult r = run(GetParam(), mode);
    ASSERT_EQ(r.stats.size(), none.stats.size());
    for (size_t i = 0; i < r.stats.size(); ++i) {
      EXPECT_EQ(r.stats[i].loss_sum, none.stats[i].loss_sum);
      EXPECT_EQ(r.stats[i].tokens, none.stats[i].tokens);
      EXPECT_EQ(r.stats[i].aux_loss, none.stats[i].aux_loss);
      EXPECT_EQ(r.stats[i].z_loss, none.stats[i].z_loss);
    }
    ASSERT_EQ(r.grads.size(), none.grads.size());
    for (size_t i = 0; i < r.grads.size(); ++i)
      EXPECT_EQ(testing::max_abs_diff(r.grads[i], none.grads[i]), 0.0) << "parameter " << i;
    // The replayed forwards are not counted twice in the step's expert load.
    EXPECT_EQ(r.step_load, none.step_load);
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, Recompute, ::testing::ValuesIn(configs_under_test()),
                         [](const auto& info) {
                           std::string n = std::filesystem::path(info.param).stem().string();
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

TEST(ChunkedHead, ChunksOfRowsEqualOneChunk) {
  // 2 x 64 rows in chunks of 7 (the last one shorter), tied and untied heads.
  for (const std::string file : {"configs/tiny.pbtxt", "configs/moe_tiny.pbtxt"}) {
    SCOPED_TRACE(file);
    const RunResult one = run(file, "none", 1 << 20), chunked = run(file, "none", 7);
    for (size_t i = 0; i < one.stats.size(); ++i) {
      EXPECT_NEAR(chunked.stats[i].loss_sum, one.stats[i].loss_sum,
                  1e-12 * std::abs(one.stats[i].loss_sum));
      EXPECT_EQ(chunked.stats[i].tokens, one.stats[i].tokens);
    }
    for (size_t i = 0; i < one.grads.size(); ++i)
      EXPECT_LT(testing::rel_max_diff(chunked.grads[i], one.grads[i]), 1e-12) << "parameter " << i;
  }
}

TEST(RecomputeConfig, UnknownModeIsRefusedByName) {
  try {
    config::Config cfg = load_config({source_path("configs/tiny.pbtxt")}, {"train.recompute=some"});
    validate_config(cfg, 1);
    FAIL() << "train.recompute=some was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.recompute"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace linea
