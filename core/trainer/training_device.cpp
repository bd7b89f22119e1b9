#include "core/trainer/training_device.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "core/config/config.h"
#include "core/modules/mixers/mixer_factories.h"  // mixer_head_dim
#include "core/modules/mixers/token_mixer.h"
#include "parallel/launch_env.h"
#ifdef LINEA_HAS_CUDA
#include "core/tensor/cuda_allocator.h"
#include "core/tensor/cuda_device.h"
#include "parallel/nccl_communicator.h"
#endif

namespace linea {
namespace {

constexpr const char* kWhatRuns =
    "train.device = cuda runs: L layers LINEAR_ATTENTION (every feature map, any key width; no "
    "window), LIGHTNING, RETNET, SIMPLE_GLA, GLA, HGRN2, MAMBA2, DELTANET, GATED_DELTANET or MOM "
    "with key heads of 64 or 128, values a multiple of 64, short convolution on or off "
    "(conv_size <= 8); N layers softmax attention with heads of 64 or 128; DENSE or MOE channel "
    "mixers; train.dtype f32 (train.precision f32 or bf16); any DP, SP and EP layout "
    "(docs/cuda.md)";

bool gpu_mixer_kind(config::MixerConfig::Kind k) {
  using MC = config::MixerConfig;
  return k == MC::LINEAR_ATTENTION || k == MC::LIGHTNING || k == MC::RETNET ||
         k == MC::SIMPLE_GLA || k == MC::GLA || k == MC::HGRN2 || k == MC::MAMBA2 ||
         k == MC::DELTANET || k == MC::GATED_DELTANET || k == MC::MOM || k == MC::GSA;
}

void check_gpu_model(const config::Config& cfg) {
  using MC = config::MixerConfig;
  const auto& t = cfg.train();
  LINEA_USER_CHECK(t.dtype() == "f32", kWhatRuns)
      << "train.dtype = " << t.dtype()
      << " is not supported with train.device = cuda (f32 master weights; train.precision "
         "chooses bf16 matmuls)";
  const std::string pattern = resolved_layer_pattern(cfg);
  for (int layer = 0; layer < static_cast<int>(pattern.size()); ++layer) {
    if (pattern[layer] == 'N') {
      const auto& a = cfg.model().attention();
      const int64_t d = a.head_dim() > 0 ? a.head_dim() : cfg.model().hidden_size() / a.num_heads();
      LINEA_USER_CHECK(d == 64 || d == 128, kWhatRuns)
          << "layer " << layer << ": softmax attention with heads of " << d
          << " (model.attention.head_dim) is not on GPUs";
      continue;
    }
    const MC m = mixer_config_for_layer(cfg, layer);
    const bool delta = m.kind() == MC::DELTANET || m.kind() == MC::GATED_DELTANET;
    // The delta mixers, Mamba2 and MoM keep their short convolution unless it is turned off.
    const bool conv =
        m.short_conv() == MC::ON ||
        (m.short_conv() == MC::DEFAULT && (delta || m.kind() == MC::MAMBA2 || m.kind() == MC::MOM));
    LINEA_USER_CHECK(!conv || m.conv_size() <= 8, kWhatRuns)
        << "layer " << layer << ": model.mixer.conv_size = " << m.conv_size()
        << " is not on GPUs (the CUDA short convolution takes conv_size <= 8)";
    MixerContext ctx;
    ctx.hidden = cfg.model().hidden_size();
    const int64_t dk = mixer_head_dim(ctx, m);
    // Mamba2's value heads are expand_v * hidden_size / num_heads wide; the delta kinds' and
    // MoM's expand_v * dk.
    const int64_t dv = m.value_dim() > 0 ? m.value_dim()
                       : m.kind() == MC::MAMBA2 && m.num_heads() > 0
                           ? std::llround(m.expand_v() * double(ctx.hidden)) / m.num_heads()
                       : delta || m.kind() == MC::MOM ? std::llround(m.expand_v() * double(dk))
                                                      : dk;
    // GSA: its first pass (the value-decay scan) has the slots as value width, its second (the
    // vector-decay scan) as key width and dv as value width; both scans take 64 or 128.
    const auto wide_ok = [](int64_t n) { return n == 64 || n == 128; };
    LINEA_USER_CHECK(m.kind() != MC::GSA || (wide_ok(m.num_slots()) && wide_ok(dv)),
                     "set model.mixer.num_slots (and the value width) to 64 or 128, or "
                     "train.device = cpu")
        << "layer " << layer << ": GSA with " << m.num_slots()
        << " slots (model.mixer.num_slots) and values of " << dv
        << " is not on GPUs: the CUDA decay scans take 64 or 128 (docs/cuda.md)";
    // Basic linear attention's scan takes any key width (the feature map's output dim: blocks of
    // key columns); the gated scans take 64 or 128.
    const bool dk_ok = m.kind() == MC::LINEAR_ATTENTION || dk == 64 || dk == 128;
    LINEA_USER_CHECK(gpu_mixer_kind(m.kind()) && m.window_size() == 0 && dk_ok && dv % 64 == 0,
                     kWhatRuns)
        << "layer " << layer << ": mixer " << MC::Kind_Name(m.kind()) << ", feature map "
        << MC::FeatureMap_Name(m.feature_map()) << ", window " << m.window_size() << ", short conv "
        << (conv ? "on" : "off") << ", head " << dk << " x " << dv
        << " (model.mixer.head_dim x value_dim) is not on GPUs yet";
  }
}

}  // namespace

Device training_device(const config::Config& cfg, const parallel::Communicator& world) {
  if (cfg.train().device() != "cuda") {
    LINEA_USER_CHECK(cfg.train().precision() == "f32",
                     "set train.device = cuda, or train.precision = f32 on the CPU")
        << "train.precision = " << cfg.train().precision()
        << " is GPU mixed precision; the CPU computes in train.dtype";
    return Device::cpu();
  }
#ifndef LINEA_HAS_CUDA
  LINEA_USER_CHECK(false,
                   "set train.device = cpu, or rebuild with the CUDA backend (configure where nvcc "
                   "is found, or pass -DLINEA_CUDA=ON)")
      << "train.device = cuda, but this build has no CUDA backend";
  return Device::cpu();
#else
  const int n = cuda::device_count();
  LINEA_USER_CHECK(n > 0, "set train.device = cpu, or run where an NVIDIA GPU is visible")
      << "train.device = cuda, but there is no usable GPU: " << cuda::unavailable_reason();
  check_gpu_model(cfg);
  const int local = parallel::local_rank_from_environment();
  return Device::cuda((local >= 0 ? local : world.rank()) % n);
#endif
}

size_t device_peak_bytes(Device device) {
#ifdef LINEA_HAS_CUDA
  if (!device.is_cpu()) return cuda::allocator_stats(device.index).peak_bytes_in_use;
#endif
  return 0;
}

void reset_device_peak(Device device) {
#ifdef LINEA_HAS_CUDA
  if (!device.is_cpu()) cuda::reset_peak(device.index);
#endif
}

std::unique_ptr<parallel::Communicator> training_world(const config::Config& cfg,
                                                       parallel::Communicator& world,
                                                       Device device) {
  const std::string& backend = cfg.parallel().backend();
  if (device.is_cpu() || backend == "mpi" || world.size() == 1) return nullptr;
#ifdef LINEA_HAS_CUDA
  // NCCL refuses two ranks on one GPU: auto takes it only when every rank's local rank has a GPU
  // of its own (agreed over the world, so every rank takes the same backend).
  const int local = parallel::local_rank_from_environment();
  const bool own_gpu = local >= 0 && local < cuda::device_count();
  const bool all_own = world.all_reduce_scalar(own_gpu ? 0.0 : 1.0) == 0.0;
  if (backend == "auto" && !all_own) {
    if (world.rank() == 0)
      spdlog::warn(
          "parallel.backend = auto: some ranks share a GPU, so collectives go through MPI with "
          "host staging (slow); give each rank its own GPU for NCCL");
    return nullptr;
  }
  LINEA_USER_CHECK(all_own,
                   "run one rank per GPU (mpirun -np <GPUs per node> per node), or set "
                   "parallel.backend = mpi")
      << "parallel.backend = nccl, but some ranks have no GPU of their own (local rank " << local
      << ", " << cuda::device_count() << " GPUs visible here)";
  return parallel::NcclCommunicator::create(world, device.index, "world");
#else
  return nullptr;
#endif
}

}  // namespace linea
