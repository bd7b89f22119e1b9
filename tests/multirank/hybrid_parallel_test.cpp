// Whole training runs under sequence and expert parallelism: a 1/4 hybrid model (LLLNLLLN) trained
// for 5 steps as DP x SP (x EP) on W ranks gives the same losses as one rank with the whole batch
// (f64, 1e-10). Layouts: SP = W; DP = 2 x SP = 2 on 4 ranks; and with MoE channel mixers on every
// second layer, SP = W with EP = W, and DP = 2 x SP = 2 with EP = 2 (each SP pair shares experts)
// and EP = 4 (the experts spread over all four ranks), for both routers, with the load-balancing
// aux loss, the z-loss and the aux-loss-free bias on. The aux loss is a per-micro-batch product of
// means taken over the SP group (router.h), so DP x SP x EP equals one rank that accumulates DP
// micro-batches of the same size (docs/moe.md: not one micro-batch DP times as large).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/config/config.h"
#include "core/trainer/trainer.h"
#include "parallel/mpi_communicator.h"

namespace linea {
namespace {

config::Config hybrid_config(const std::string& out_dir) {
  config::Config cfg = load_config({}, {});
  auto* m = cfg.mutable_model();
  m->set_hidden_size(16);
  m->set_vocab_size(32);
  m->set_num_layers(8);
  m->set_layer_pattern("LLLNLLLN");
  m->mutable_mixer()->set_kind(config::MixerConfig::GATED_DELTANET);
  m->mutable_mixer()->set_num_heads(2);
  m->mutable_mixer()->set_chunk_size(4);
  m->mutable_attention()->set_num_heads(4);
  m->mutable_attention()->set_num_kv_heads(2);
  m->mutable_channel_mixer()->set_intermediate_size(32);
  cfg.mutable_data()->set_source(config::DataConfig::MQAR);
  cfg.mutable_data()->set_seq_len(32);
  cfg.mutable_data()->mutable_mqar()->set_num_kv_pairs(4);
  cfg.mutable_data()->mutable_mqar()->set_num_queries(4);
  cfg.mutable_train()->set_steps(5);
  cfg.mutable_train()->set_micro_batch_size(2);
  cfg.mutable_train()->set_dtype("f64");
  cfg.mutable_train()->set_output_dir(out_dir);
  cfg.mutable_schedule()->set_warmup_steps(1);
  cfg.mutable_logging()->set_every_steps(100);
  return cfg;
}

std::string temp_dir(const std::string& name, int rank) {
  return (std::filesystem::temp_directory_path() /
          ("linea_sp_test_" + std::to_string(::getpid()) + "_" + name + std::to_string(rank)))
      .string();
}

// The hybrid with MoE channel mixers on layers 1, 3, 5, 7 (8 experts, top-2, one shared expert).
void add_moe(config::Config& cfg, config::MoeConfig::Router router) {
  auto* cm = cfg.mutable_model()->mutable_channel_mixer();
  cm->set_kind(config::ChannelMixerConfig::MOE);
  cm->set_moe_every(2);
  auto* moe = cm->mutable_moe();
  moe->set_router(router);
  moe->set_num_experts(8);
  moe->set_top_k(2);
  moe->set_expert_intermediate_size(12);
  moe->set_num_shared_experts(1);
  moe->set_shared_intermediate_size(8);
  moe->set_aux_loss_coeff(0.05);
  moe->set_z_loss_coeff(0.01);
  moe->set_bias_update_rate(0.01);
}

void expect_layout_matches_one_rank(int dp, int sp, int ep = 1,
                                    const config::MoeConfig::Router* router = nullptr) {
  auto world = parallel::MpiCommunicator::world();
  config::Config par = hybrid_config(temp_dir("par", world->rank()));
  if (router) add_moe(par, *router);
  par.mutable_parallel()->set_dp(dp);
  par.mutable_parallel()->set_sp(sp);
  par.mutable_parallel()->set_ep(ep);
  TrainSummary got = train(par, *world);

  parallel::SelfCommunicator self;
  config::Config one = hybrid_config(temp_dir("one", world->rank()));
  if (router) add_moe(one, *router);
  if (router) {
    one.mutable_train()->set_grad_accum_steps(dp);  // the aux loss is per micro-batch
  } else {
    one.mutable_train()->set_micro_batch_size(2 * dp);
  }
  TrainSummary ref = train(one, self);

  ASSERT_EQ(got.losses.size(), 5u);
  EXPECT_EQ(got.num_parameters, ref.num_parameters);
  for (size_t s = 0; s < got.losses.size(); ++s) {
    EXPECT_NEAR(got.losses[s], ref.losses[s], 1e-10)
        << "dp " << dp << " sp " << sp << " ep " << ep << " step " << s;
    EXPECT_NEAR(got.aux_losses[s], ref.aux_losses[s], 1e-10)
        << "dp " << dp << " sp " << sp << " ep " << ep << " step " << s;
  }
  for (const char* n : {"par", "one"}) std::filesystem::remove_all(temp_dir(n, world->rank()));
}

TEST(SequenceParallel, HybridModelSpEqualsWorldMatchesOneRank) {
  auto world = parallel::MpiCommunicator::world();
  expect_layout_matches_one_rank(1, world->size());
}

TEST(SequenceParallel, HybridModelDp2Sp2MatchesOneRank) {
  auto world = parallel::MpiCommunicator::world();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  expect_layout_matches_one_rank(2, 2);
}

TEST(ExpertParallel, HybridMoeSpEqualsEpEqualsWorldMatchesOneRank) {
  auto world = parallel::MpiCommunicator::world();
  const auto router = config::MoeConfig::SOFTMAX_TOPK;
  expect_layout_matches_one_rank(1, world->size(), world->size(), &router);
}

TEST(ExpertParallel, HybridMoeDp2Sp2Ep2MatchesOneRank) {
  auto world = parallel::MpiCommunicator::world();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  for (auto router : {config::MoeConfig::SOFTMAX_TOPK, config::MoeConfig::SIGMOID_BIAS})
    expect_layout_matches_one_rank(2, 2, 2, &router);
}

TEST(ExpertParallel, HybridMoeDp2Sp2Ep4MatchesOneRank) {
  auto world = parallel::MpiCommunicator::world();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  for (auto router : {config::MoeConfig::SOFTMAX_TOPK, config::MoeConfig::SIGMOID_BIAS})
    expect_layout_matches_one_rank(2, 2, 4, &router);
}

}  // namespace
}  // namespace linea
