#include "core/trainer/evaluate.h"

#include <cmath>

#include "core/checkpoint/checkpoint.h"    // the weights of `linea eval`
#include "core/config/config.h"            // validation, dp
#include "core/logging/log.h"              // rank-aware logs
#include "core/trainer/training_device.h"  // train.device
#include "kernels/sequence.h"              // this SP rank's shard of each sequence

namespace linea {

EvalResult evaluate(const config::Config& cfg, const parallel::ProcessGrid& grid, Model& model,
                    const data::Dataset& valid) {
  const int micro = cfg.eval().micro_batch_size() > 0 ? cfg.eval().micro_batch_size()
                                                      : cfg.train().micro_batch_size();
  const int dp = grid.shape().dp;
  const int64_t per_batch = int64_t(micro) * dp;
  int64_t batches = cfg.eval().batches();
  if (valid.samples_per_epoch() > 0) {
    const int64_t whole = valid.samples_per_epoch() / per_batch;
    LINEA_USER_CHECK(whole > 0, "lower eval.micro_batch_size, or raise data.valid_fraction")
        << "the validation split has " << valid.samples_per_epoch()
        << " sequences, fewer than one validation batch of " << per_batch << " (eval batch "
        << micro << " x dp " << dp << ")";
    // Never visit a window twice: at most one pass over the split.
    if (batches == 0 || batches > whole) batches = whole;
  }
  LINEA_USER_CHECK(batches > 0, "set eval.batches > 0: generated (MQAR) validation data has no end")
      << "eval.batches = 0 asks for one pass over a validation split without an end";

  const int64_t shard = valid.seq_len() / grid.sp().size(), s0 = grid.sp_rank() * shard;
  double loss_sum = 0, tokens = 0;
  for (int64_t b = 0; b < batches; ++b) {
    const data::Batch full = data::make_batch(valid, b, 1, 0, dp, grid.dp_rank(), micro);
    const data::Batch local{kernels::slice_time(full.inputs, s0, s0 + shard).to(model.device()),
                            kernels::slice_time(full.targets, s0, s0 + shard).to(model.device())};
    const LossStats s = model.forward_loss(local);
    loss_sum += s.loss_sum;
    tokens += static_cast<double>(s.tokens);
  }
  EvalResult r;
  r.batches = batches;
  const double n = grid.dp_sp().all_reduce_scalar(tokens);
  LINEA_USER_CHECK(n > 0, "check data.* settings: the validation data has no target tokens")
      << "validation produced no target tokens";
  r.tokens = static_cast<int64_t>(n);
  r.loss = grid.dp_sp().all_reduce_scalar(loss_sum) / n;
  r.perplexity = std::exp(r.loss);
  return r;
}

EvalResult evaluate_checkpoint(const config::Config& cfg, const std::string& dir,
                               parallel::Communicator& world, int64_t* step) {
  validate_config(cfg, world.size());
  const Device device = training_device(cfg, world);
  const std::unique_ptr<parallel::Communicator> nccl_world = training_world(cfg, world, device);
  parallel::ProcessGrid grid(
      nccl_world ? *nccl_world : world,
      {resolved_dp(cfg, world.size()), cfg.parallel().sp(), cfg.parallel().ep()});
  auto valid = data::make_dataset(cfg, data::Split::kValid);
  Model model(cfg, dtype_from_name(cfg.train().dtype()), &grid.sp(), &grid.ep());
  if (!device.is_cpu()) model.to(device);
  const int64_t s = checkpoint::load_checkpoint({cfg, grid, model, nullptr}, dir);
  if (step) *step = s;
  return evaluate(cfg, grid, model, *valid);
}

}  // namespace linea
