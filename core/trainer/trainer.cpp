#include "core/trainer/trainer.h"

#include <sys/resource.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

// ---- what the loop is made of ---------------------------------------------------------------
#include "core/checkpoint/checkpoint.h"    // save after a step, resume before the loop
#include "core/config/config.h"            // validation and derived sizes
#include "core/data/dataset.h"             // samples by global index, per-DP-rank slices
#include "core/logging/log.h"              // rank-aware spdlog
#include "core/model/model.h"              // forward + backward of the whole model
#include "core/model/model_size.h"         // FLOPs per token (MFU on GPUs)
#include "core/modules/moe/moe_layer.h"    // MoE statistics and the aux-loss-free bias
#include "core/optim/adamw.h"              // AdamW, schedule, gradient clipping
#include "core/trainer/evaluate.h"         // periodic validation
#include "core/trainer/preemption.h"       // SIGTERM / SIGUSR1: stop after the step
#include "core/trainer/training_device.h"  // train.device: the CPU or this rank's GPU
#include "core/util/phase_times.h"         // LINEA_PHASE_TIMES: where a step's time goes
#include "kernels/elementwise.h"           // finiteness checks
#include "kernels/sequence.h"              // this SP rank's shard of each sequence
#include "parallel/grad_sync.h"            // gradient reduction (DP x SP, expert DP), norm clip
#include "parallel/process_grid.h"         // DP x SP groups, EP groups
#include "parallel/watchdog.h"             // hung collectives end the job

namespace linea {
namespace {

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// Bytes this rank sent per collective kind, over every group of the grid.
std::array<uint64_t, static_cast<int>(parallel::CollectiveKind::kCount)> sent_bytes(
    const parallel::ProcessGrid& grid) {
  std::array<uint64_t, static_cast<int>(parallel::CollectiveKind::kCount)> b{};
  for (const parallel::Communicator* c :
       {&grid.world(), &grid.dp(), &grid.sp(), &grid.dp_sp(), &grid.ep(), &grid.expert_dp()})
    for (size_t k = 0; k < b.size(); ++k) b[k] += c->stats().bytes_sent[k];
  return b;
}

// A resumed run keeps the metrics lines of the steps up to its checkpoint and drops those that an
// interrupted run logged after it (they are trained again and logged anew).
void keep_metrics_up_to(const std::filesystem::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.value("step", int64_t(0)) <= step)
      kept += line + "\n";
  }
  in.close();
  std::ofstream(path, std::ios::trunc) << kept;
}

// Installs a watchdog on the caller's world communicator for the training run, and removes it
// again (the communicator outlives the run; the watchdog does not).
struct WatchdogInstalled {
  WatchdogInstalled(parallel::Communicator& c, parallel::CollectiveWatchdog* w) : comm(c) {
    comm.set_watchdog(w);
  }
  ~WatchdogInstalled() { comm.set_watchdog(nullptr); }
  parallel::Communicator& comm;
};

// Fault injection (train.inject_nan_step): a NaN in the first gradient entry of this rank.
void poison_gradient(const ParameterList& params) {
  Tensor first = params.front()->grad.view({-1}).slice(0, 1);
  first.fill_(std::nan(""));
}

}  // namespace

TrainSummary train(const config::Config& cfg, parallel::Communicator& world) {
  validate_config(cfg, world.size());
  const Device device = training_device(cfg, world);  // refuses what cannot run, before any work
  const auto& tc = cfg.train();
  const int dp = resolved_dp(cfg, world.size());
  // A collective that hangs (a rank died or stopped) ends the job instead (parallel/watchdog.h).
  std::unique_ptr<parallel::CollectiveWatchdog> watchdog;
  if (cfg.parallel().collective_timeout_s() > 0 && world.size() > 1)
    watchdog = std::make_unique<parallel::CollectiveWatchdog>(cfg.parallel().collective_timeout_s(),
                                                              world.rank());
  const WatchdogInstalled watched(world, watchdog.get());
  // GPU runs with one GPU per rank talk through NCCL (parallel.backend); the rest through `world`.
  const std::unique_ptr<parallel::Communicator> nccl_world = training_world(cfg, world, device);
  if (nccl_world) nccl_world->set_watchdog(watchdog.get());
  parallel::ProcessGrid grid(nccl_world ? *nccl_world : world,
                             {dp, cfg.parallel().sp(), cfg.parallel().ep()});
  const PreemptionGuard preemption;  // SIGTERM / SIGUSR1: finish the step, then stop cleanly
  const bool profile = std::getenv("LINEA_PHASE_TIMES") != nullptr;
  std::string last_phase_table;
  int nonfinite_in_row = 0;
  int64_t skipped_steps = 0;
  const bool leader = world.rank() == 0;

  const std::filesystem::path out_dir = tc.output_dir();
  if (leader) {
    std::filesystem::create_directories(out_dir);
    std::ofstream(out_dir / "config.pbtxt") << config_to_text(cfg);
  }

  auto dataset = data::make_dataset(cfg);
  LINEA_USER_CHECK(dataset->vocab_size() <= cfg.model().vocab_size(),
                   "set model.vocab_size to at least the dataset's vocabulary")
      << "model.vocab_size = " << cfg.model().vocab_size() << " but the data has ids up to "
      << dataset->vocab_size() - 1;

  const DType dtype = dtype_from_name(tc.dtype());
  Model model(cfg, dtype, &grid.sp(), &grid.ep());
  model.init(tc.seed());  // on the CPU, identically on every rank, then to the training device
  if (!device.is_cpu()) model.to(device);
  AdamW optimizer(model.parameters(), cfg.optimizer());
  // Resume: the newest complete checkpoint of the output dir, or checkpoint.resume_from.
  const checkpoint::TrainingState state{cfg, grid, model, &optimizer};
  const std::string resume_from = checkpoint::resume_path(cfg);
  const int64_t first_step =
      resume_from.empty() ? 0 : checkpoint::load_checkpoint(state, resume_from);
  const int64_t end_step = tc.stop_after_steps() > 0
                               ? std::min<int64_t>(tc.steps(), first_step + tc.stop_after_steps())
                               : int64_t(tc.steps());
  std::ofstream metrics;  // a resumed run appends to the metrics of the steps before
  if (leader) {
    if (first_step > 0) keep_metrics_up_to(out_dir / "metrics.jsonl", first_step);
    metrics.open(out_dir / "metrics.jsonl", first_step > 0 ? std::ios::app : std::ios::trunc);
    LINEA_USER_CHECK(metrics.good(), "check that train.output_dir is writable")
        << "cannot write " << (out_dir / "metrics.jsonl").string();
  }
  const int eval_every = cfg.eval().every_steps(), save_every = cfg.checkpoint().every_steps();
  const auto valid = eval_every > 0 ? data::make_dataset(cfg, data::Split::kValid) : nullptr;
  const ModelSize size = count_model_size(cfg);
  const double mfu_flops_per_token = 6.0 * static_cast<double>(size.active_without_embedding);
  const int64_t total_parameters = parallel::count_parameters(model.parameters(), grid);
  spdlog::info("model: {} parameters ({} on this rank), layers {} ({}), hidden {}, dtype {}, on {}",
               total_parameters, model.num_parameters(), cfg.model().num_layers(),
               resolved_layer_pattern(cfg), cfg.model().hidden_size(), tc.dtype(), device.str());
  spdlog::info("grid: world {} = dp {} x sp {}, ep {} ({}); global batch {} x {} tokens",
               world.size(), dp, cfg.parallel().sp(), cfg.parallel().ep(),
               nccl_world ? "nccl" : "mpi",
               int64_t(tc.micro_batch_size()) * tc.grad_accum_steps() * dp, dataset->seq_len());

  TrainSummary summary;
  summary.num_parameters = total_parameters;
  summary.first_step = first_step;
  const int accum = tc.grad_accum_steps();
  for (int64_t step = first_step; step < end_step; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    // Profiling runs (LINEA_PHASE_TIMES=1): per-phase times of this step (core/util/phase_times.h).
    PhaseTimes times;
    std::optional<PhaseTimesScope> profiling;
    if (profile) profiling.emplace(&times);
    reset_device_peak(device);
    const auto bytes0 = sent_bytes(grid);
    model.zero_grad();
    for (MoeLayer* moe : model.moe_layers()) moe->reset_step_load();

    std::vector<data::Batch> batches;
    double local_tokens = 0;
    for (int micro = 0; micro < accum; ++micro) {
      data::Batch full =
          data::make_batch(*dataset, step, accum, micro, dp, grid.dp_rank(), tc.micro_batch_size());
      // Sequence parallelism: this rank keeps its contiguous shard of every sequence.
      const int64_t shard = dataset->seq_len() / grid.sp().size(), s0 = grid.sp_rank() * shard;
      data::Batch local{kernels::slice_time(full.inputs, s0, s0 + shard),
                        kernels::slice_time(full.targets, s0, s0 + shard)};
      const int32_t* tp = local.targets.data<int32_t>();
      for (int64_t i = 0; i < local.targets.numel(); ++i) local_tokens += tp[i] >= 0;
      batches.push_back({local.inputs.to(device), local.targets.to(device)});
    }
    // Token-weighted mean over the global batch: every rank scales its loss sum by
    // group_size / N_total so that the averaging all-reduce yields d(sum / N_total).
    const double n_total = grid.dp_sp().all_reduce_scalar(local_tokens);
    LINEA_USER_CHECK(n_total > 0, "the data produced no target tokens; check data.* settings")
        << "step " << step << " has no target tokens";
    const double grad_scale = grid.dp_sp().size() / n_total;
    // MoE aux and z losses are per micro-batch (this rank's tokens of it); the step's objective
    // takes their mean over the accum x DP x SP micro-batches. The averaging all-reduce divides by
    // the group size, so each rank scales their gradients by group_size / (accum * group_size).
    const double aux_grad_scale = 1.0 / accum;
    double loss_sum = 0, aux_sum = 0, z_sum = 0, dropped = 0;
    for (const auto& b : batches) {
      const LossStats s = model.forward_backward(b, grad_scale, aux_grad_scale);
      loss_sum += s.loss_sum;
      aux_sum += s.aux_loss;
      z_sum += s.z_loss;
      dropped += static_cast<double>(s.dropped);
    }

    if (tc.inject_nan_step() == step + 1 && world.rank() == 0) {
      spdlog::warn("train.inject_nan_step: writing a NaN into this rank's gradient at step {}",
                   step + 1);
      poison_gradient(model.parameters());
    }
    std::optional<Phase> phase(std::in_place, "gradient sync", device);
    parallel::sync_gradients(model.parameters(), grid);
    phase.reset();
    const double loss = grid.dp_sp().all_reduce_scalar(loss_sum) / n_total;
    const double micro_batches = static_cast<double>(accum) * grid.dp_sp().size();
    const bool has_moe = !model.moe_layers().empty();
    double aux_loss = 0, z_loss = 0, load_max_over_mean = 0;
    std::vector<double> layer_max_over_mean;  // per MoE layer, in layer order
    std::vector<std::vector<double>> global_load;
    if (has_moe) {
      aux_loss = grid.dp_sp().all_reduce_scalar(aux_sum) / micro_batches;
      z_loss = grid.dp_sp().all_reduce_scalar(z_sum) / micro_batches;
      dropped = grid.dp_sp().all_reduce_scalar(dropped);
      // The step's expert load, summed over micro-batches and the DP x SP group, so that every
      // rank sees (and applies the bias update from) the same numbers.
      const auto& layers = model.moe_layers();
      std::vector<double> flat;
      for (const MoeLayer* moe : layers)
        flat.insert(flat.end(), moe->step_load().begin(), moe->step_load().end());
      Tensor load = Tensor::from_vector({static_cast<int64_t>(flat.size())}, flat, DType::kF64);
      grid.dp_sp().all_reduce(load);
      const std::vector<double> all = load.to_vector();
      size_t off = 0;
      for (const MoeLayer* moe : layers) {
        global_load.emplace_back(all.begin() + off, all.begin() + off + moe->num_experts());
        off += moe->num_experts();
        const auto& g = global_load.back();
        double total = 0, mx = 0;
        for (double v : g) total += v, mx = std::max(mx, v);
        layer_max_over_mean.push_back(total > 0 ? mx * g.size() / total : 0.0);
        load_max_over_mean = std::max(load_max_over_mean, layer_max_over_mean.back());
      }
    }
    phase.emplace("gradient norm + clip", device);
    const double grad_norm =
        parallel::clip_gradients(model.parameters(), grid, cfg.optimizer().grad_clip());
    phase.reset();
    // The loss and the gradient norm are global (all-reduced), so every rank takes the same branch.
    const bool finite = std::isfinite(loss) && std::isfinite(grad_norm);
    const double lr = learning_rate(cfg.optimizer(), cfg.schedule(), step, tc.steps());
    if (finite) {
      nonfinite_in_row = 0;
      const Phase adam("optimizer", device);
      optimizer.step(lr);
      // SIGMOID_BIAS routers: the aux-loss-free bias moves after the step, from the global load.
      for (size_t l = 0; l < global_load.size(); ++l)
        model.moe_layers()[l]->router().update_bias(global_load[l]);
    } else {
      ++nonfinite_in_row;
      ++skipped_steps;
      LINEA_USER_CHECK(tc.nonfinite() == "skip",
                       "lower optimizer.lr or raise schedule.warmup_steps; train.nonfinite = skip "
                       "skips such steps")
          << "non-finite loss (" << loss << ") or gradient norm (" << grad_norm << ") at step "
          << step + 1 << " (train.nonfinite = stop)";
      LINEA_USER_CHECK(nonfinite_in_row <= tc.max_nonfinite_in_row(),
                       "lower optimizer.lr or raise schedule.warmup_steps; check the data")
          << nonfinite_in_row << " non-finite steps in a row (loss " << loss << ", gradient norm "
          << grad_norm << " at step " << step + 1
          << "), more than train.max_nonfinite_in_row = " << tc.max_nonfinite_in_row();
      spdlog::warn(
          "step {}: non-finite loss ({}) or gradient norm ({}): skipped, no optimizer step ({} in "
          "a row, {} in all)",
          step + 1, loss, grad_norm, nonfinite_in_row, skipped_steps);
    }
    summary.losses.push_back(loss);
    summary.aux_losses.push_back(aux_loss + z_loss);

    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int64_t tokens = int64_t(tc.micro_batch_size()) * accum * dp * dataset->seq_len();
    // Bytes sent this step, per collective kind (all-gather: LASP-2 states; all-reduce: gradients).
    const auto bytes1 = sent_bytes(grid);
    nlohmann::json comm_kinds = nlohmann::json::object();
    uint64_t comm = 0;
    std::string comm_text;
    for (size_t k = 0; k < bytes1.size(); ++k) {
      const uint64_t d = bytes1[k] - bytes0[k];
      comm += d;
      if (d == 0) continue;
      const char* name = parallel::collective_name(static_cast<parallel::CollectiveKind>(k));
      comm_kinds[name] = d;
      comm_text += fmt::format(" {} {}", name, d);
    }
    const bool log_now =
        step == first_step || (step + 1) % cfg.logging().every_steps() == 0 || step + 1 == end_step;
    if (log_now) {
      const std::string moe_text =
          has_moe ? fmt::format(
                        " | aux_loss {:.5f} | z_loss {:.5f} | load max/mean {:.3f} | "
                        "dropped {:.0f}",
                        aux_loss, z_loss, load_max_over_mean, dropped)
                  : std::string();
      spdlog::info(
          "step {:>5}/{} | loss {:.4f}{} | lr {:.3e} | grad norm {:.3f} | {:.0f} tok/s | "
          "{:.3f} s | sent B:{} | rss {:.0f} MB{}",
          step + 1, tc.steps(), loss, moe_text, lr, grad_norm, tokens / secs, secs,
          comm_text.empty() ? " 0" : comm_text, peak_rss_mb(),
          device.is_cpu()
              ? std::string()
              : fmt::format(
                    " | gpu peak {:.2f} GB | mfu {:.1f}%", device_peak_bytes(device) / 1e9,
                    100 * mfu_flops_per_token * tokens / secs / world.size() / kGpuBf16PeakFlops));
      if (leader) {
        nlohmann::json j = {{"step", step + 1},
                            {"loss", loss},
                            {"lr", lr},
                            {"grad_norm", grad_norm},
                            {"tokens_per_s", tokens / secs},
                            {"step_time_s", secs},
                            {"tokens", tokens},
                            {"comm_bytes", comm},
                            {"comm_bytes_by_kind", comm_kinds},
                            {"peak_rss_mb", peak_rss_mb()},
                            {"skipped_steps", skipped_steps}};
        if (!finite) j["skipped"] = true;
        if (!device.is_cpu()) {
          // Per GPU: this rank's allocator peak; MFU as 6 x (active parameters without the input
          // embedding) x tokens/s per GPU over the bf16 peak (docs/performance.md), and with the
          // sequence-dependent mixer FLOPs too.
          const double per_gpu = tokens / secs / world.size();
          j["gpu_peak_bytes"] = device_peak_bytes(device);
          j["tokens_per_s_per_gpu"] = per_gpu;
          j["mfu"] = mfu_flops_per_token * per_gpu / kGpuBf16PeakFlops;
          j["mfu_with_sequence_flops"] = size.train_flops * per_gpu / kGpuBf16PeakFlops;
        }
        if (has_moe) {
          j["aux_loss"] = aux_loss;
          j["z_loss"] = z_loss;
          j["expert_load_max_over_mean"] = load_max_over_mean;
          if (cfg.model().channel_mixer().moe().log_expert_load())
            j["expert_load_max_over_mean_by_layer"] = layer_max_over_mean;
          j["dropped_tokens"] = dropped;
        }
        metrics << j.dump() << "\n" << std::flush;
      }
    }

    // ---- after the step: validation, checkpoint -----------------------------------------------
    const int64_t done = step + 1;
    if (eval_every > 0 && (done % eval_every == 0 || done == tc.steps())) {
      const EvalResult v = evaluate(cfg, grid, model, *valid);
      spdlog::info("step {:>5}/{} | val_loss {:.4f} | val_ppl {:.3f} | {} tokens", done, tc.steps(),
                   v.loss, v.perplexity, v.tokens);
      if (leader)
        metrics << nlohmann::json{{"step", done},
                                  {"val_loss", v.loss},
                                  {"val_ppl", v.perplexity},
                                  {"val_tokens", v.tokens}}
                       .dump()
                << "\n"
                << std::flush;
    }
    const bool stopping = done == end_step && done < tc.steps();  // train.stop_after_steps
    const bool saved_now =
        stopping || (save_every > 0 && (done % save_every == 0 || done == tc.steps()));
    if (saved_now) checkpoint::save_checkpoint(state, done);
    if (profile) {
      last_phase_table = fmt::format("phase times of step {} ({:.3f} s, {:.3f} s in phases):\n{}",
                                     step + 1, secs, times.total_s(), times.table());
    }
    // Preemption: every rank learns whether any rank got SIGTERM / SIGUSR1; all stop after this
    // step together.
    const double sig = grid.world().all_reduce_scalar(PreemptionGuard::signal_received(),
                                                      parallel::ReduceOp::kMax);
    if (sig > 0) {
      spdlog::warn("signal {} received: stopping after step {} of {}", static_cast<int>(sig),
                   step + 1, tc.steps());
      summary.stopped_by_signal = static_cast<int>(sig);
      if (!saved_now) checkpoint::save_checkpoint(state, done);  // resume continues from here
      break;
    }
  }
  summary.skipped_steps = skipped_steps;
  if (profile && leader) {
    spdlog::info("{}", last_phase_table);
    std::ofstream(out_dir / "phase_times.txt") << last_phase_table;
  }
  for (const Parameter* p : model.parameters())
    summary.final_parameters.push_back(p->value.clone());
  if (!summary.losses.empty())
    spdlog::info("training done: {} steps, loss {:.4f} (first step) -> {:.4f} (last step)",
                 summary.losses.size(), summary.losses.front(), summary.losses.back());
  return summary;
}

}  // namespace linea
