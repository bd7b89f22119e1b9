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
    "train.device = cuda runs: L layers LINEAR_ATTENTION (feature map IDENTITY, ELU_PLUS_ONE or "
    "RELU, no window), LIGHTNING, RETNET, SIMPLE_GLA, GLA, HGRN2, DELTANET or GATED_DELTANET, "
    "without short convolution (short_conv OFF for the delta kinds, whose default is on), "
    "with key heads of 64 or 128 and values a multiple of 64; N layers softmax attention with "
    "heads of 64 or 128; DENSE or MOE channel mixers; train.dtype f32 (train.precision f32 or "
    "bf16); any DP, SP and EP layout (docs/cuda.md)";

bool gpu_mixer_kind(config::MixerConfig::Kind k) {
  using MC = config::MixerConfig;
  return k == MC::LINEAR_ATTENTION || k == MC::LIGHTNING || k == MC::RETNET ||
         k == MC::SIMPLE_GLA || k == MC::GLA || k == MC::HGRN2 || k == MC::DELTANET ||
         k == MC::GATED_DELTANET;
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
    const bool map_ok = m.kind() != MC::LINEAR_ATTENTION || m.feature_map() == MC::IDENTITY ||
                        m.feature_map() == MC::ELU_PLUS_ONE || m.feature_map() == MC::RELU;
    const bool delta = m.kind() == MC::DELTANET || m.kind() == MC::GATED_DELTANET;
    // The delta mixers keep their short convolution unless it is turned off (both papers).
    const bool conv = m.short_conv() == MC::ON || (delta && m.short_conv() == MC::DEFAULT);
    MixerContext ctx;
    ctx.hidden = cfg.model().hidden_size();
    const int64_t dk = mixer_head_dim(ctx, m);
    const int64_t dv = m.value_dim() > 0 ? m.value_dim()
                       : delta           ? static_cast<int64_t>(std::llround(m.expand_v() * dk))
                                         : dk;
    LINEA_USER_CHECK(gpu_mixer_kind(m.kind()) && map_ok && m.window_size() == 0 && !conv &&
                         (dk == 64 || dk == 128) && dv % 64 == 0,
                     kWhatRuns)
        << "layer " << layer << ": mixer " << MC::Kind_Name(m.kind()) << ", feature map "
        << MC::FeatureMap_Name(m.feature_map()) << ", window " << m.window_size() << ", short conv "
        << (conv ? "on" : "off") << ", head " << dk << " x " << dv << " is not on GPUs yet";
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
