// CUDA MoE routing (core/modules/moe/router.h on GPU tensors): one warp per token computes the
// softmax (and sigmoid) scores, the top-k with ties to the lower expert index, the combine
// weights and the logsumexp; a second kernel sums, per expert, the router probabilities over the
// tokens (and the squared logsumexps), one block per sum in f64 with a fixed order, so the
// statistics of the aux and z losses are deterministic. The backward is one warp per token again.
// f32 arithmetic from f32 or bf16 logits.
#include <algorithm>
#include <cfloat>
#include <climits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

constexpr int kWarps = 4;  // tokens per block

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// (key, expert) with the larger key, ties to the lower expert.
__device__ __forceinline__ void warp_argmax(float& key, int& e) {
  for (int o = 16; o > 0; o >>= 1) {
    const float k2 = __shfl_xor_sync(0xffffffffu, key, o);
    const int e2 = __shfl_xor_sync(0xffffffffu, e, o);
    if (k2 > key || (k2 == key && e2 < e)) key = k2, e = e2;
  }
}

// Per warp, shared: key [E], score [E], taken [E].
template <typename T>
__global__ void route_forward_kernel(const T* logits, const float* bias, int64_t N, int E, int k,
                                     bool sigmoid, bool normalise, float rs, int32_t* expert,
                                     float* weight, float* score, float* prob, float* q, float* lse,
                                     double* stats) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* key = smem + warp * 2 * E;
  float* sv = key + E;
  unsigned char* taken = reinterpret_cast<unsigned char*>(smem + kWarps * 2 * E) + warp * E;
  for (int64_t t = int64_t(blockIdx.x) * kWarps + warp; t < N; t += int64_t(gridDim.x) * kWarps) {
    const T* z = logits + t * E;
    float m = -FLT_MAX;
    for (int e = lane; e < E; e += 32) m = fmaxf(m, to_float(z[e]));
    m = warp_max(m);
    float sum = 0.0f;
    for (int e = lane; e < E; e += 32) sum += expf(to_float(z[e]) - m);
    sum = warp_sum(sum);
    float s_total = 0.0f;
    for (int e = lane; e < E; e += 32) {
      const float ze = to_float(z[e]);
      const float p = expf(ze - m) / sum;
      const float s = sigmoid ? 1.0f / (1.0f + expf(-ze)) : p;
      prob[t * E + e] = p;
      score[t * E + e] = s;
      sv[e] = s;
      // The softmax order is the logits' order (exact: no rounding of exp in the way).
      key[e] = sigmoid ? s + bias[e] : ze;
      taken[e] = 0;
      s_total += s;
    }
    s_total = warp_sum(s_total);
    for (int e = lane; e < E; e += 32) q[t * E + e] = sigmoid ? sv[e] / s_total : prob[t * E + e];
    if (lane == 0) lse[t] = m + logf(sum);
    __syncwarp();
    float chosen = 0.0f;
    for (int j = 0; j < k; ++j) {
      float best = -INFINITY;
      int be = INT_MAX;
      for (int e = lane; e < E; e += 32) {
        if (!taken[e] && (key[e] > best || (key[e] == best && e < be))) best = key[e], be = e;
      }
      warp_argmax(best, be);
      if (lane == 0) {
        taken[be] = 1;
        expert[t * k + j] = be;
        stats[t * k + j] = static_cast<double>(be);
      }
      chosen += sv[be];
      __syncwarp();
    }
    if (lane == 0) {
      for (int j = 0; j < k; ++j)
        weight[t * k + j] = rs * sv[expert[t * k + j]] / (normalise ? chosen : 1.0f);
    }
    __syncwarp();
  }
}

// Block e < E: stats[e] = sum_t q[t, e]; block E: stats[E] = sum_t lse[t]^2 (f64, fixed order).
__global__ void route_sums_kernel(const float* q, const float* lse, int64_t N, int E,
                                  double* stats) {
  __shared__ double scratch[32];
  const int e = blockIdx.x;
  double acc = 0;
  for (int64_t t = threadIdx.x; t < N; t += blockDim.x) {
    const double v = e < E ? static_cast<double>(q[t * E + e]) : static_cast<double>(lse[t]);
    acc += e < E ? v : v * v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) stats[e] = acc;
}

template <typename T>
__global__ void route_backward_kernel(const float* dweight, const int32_t* expert,
                                      const float* weight, const float* score, const float* prob,
                                      const float* lse, const float* daux, int64_t N, int E, int k,
                                      float aux_scale, float dz_coeff, bool sigmoid, bool normalise,
                                      float rs, T* dlogits) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t t = int64_t(blockIdx.x) * kWarps + warp; t < N; t += int64_t(gridDim.x) * kWarps) {
    const float* st = score + t * E;
    const float* pt = prob + t * E;
    const int32_t* et = expert + t * k;
    float chosen = 0.0f, g = 0.0f;
    for (int j = 0; j < k; ++j) {
      chosen += st[et[j]];
      g += dweight[t * k + j] * weight[t * k + j];
    }
    // d(loss)/d(score_e) through the combine weights.
    auto ds_of = [&](int e) {
      float ds = 0.0f;
      for (int j = 0; j < k; ++j) {
        if (et[j] != e) continue;
        const float dw = dweight[t * k + j];
        ds += normalise ? (rs * dw - g) / chosen : rs * dw;
      }
      return ds;
    };
    const float z_term = dz_coeff * lse[t];
    if (sigmoid) {
      float s_total = 0.0f, dq_q = 0.0f;
      for (int e = lane; e < E; e += 32) s_total += st[e];
      s_total = warp_sum(s_total);
      for (int e = lane; e < E; e += 32) dq_q += aux_scale * daux[e] * st[e] / s_total;
      dq_q = warp_sum(dq_q);
      for (int e = lane; e < E; e += 32) {
        const float ds = ds_of(e) + (aux_scale * daux[e] - dq_q) / s_total;
        dlogits[t * E + e] = from_float<T>(ds * st[e] * (1.0f - st[e]) + z_term * pt[e]);
      }
    } else {
      float dot = 0.0f;
      for (int e = lane; e < E; e += 32) dot += (ds_of(e) + aux_scale * daux[e]) * pt[e];
      dot = warp_sum(dot);
      for (int e = lane; e < E; e += 32) {
        const float ds = ds_of(e) + aux_scale * daux[e];
        dlogits[t * E + e] = from_float<T>(pt[e] * (ds - dot) + z_term * pt[e]);
      }
    }
  }
}

void check_f32(const Tensor& t, const Tensor& ref, int64_t numel, const char* op,
               const char* name) {
  check_dtype(t, DType::kF32, op, name);
  check_same_device(t, ref, op, name, "logits");
  LINEA_CHECK(t.numel() == numel) << op << ": " << name << " " << describe(t) << ", expected "
                                  << numel << " values";
}

void check_route(const Tensor& logits, int64_t top_k, const Tensor& expert, const Tensor& weight,
                 const Tensor& score, const Tensor& prob, const Tensor& lse, const char* op) {
  check_float(logits, op, "logits");
  LINEA_CHECK(logits.ndim() == 2 && logits.dim(1) >= 1 && logits.dim(1) <= (1 << 16))
      << op << ": logits " << describe(logits) << " must be [N, E] with 1 <= E <= 65536";
  const int64_t N = logits.dim(0), E = logits.dim(1);
  LINEA_CHECK(top_k >= 1 && top_k <= E) << op << ": top_k " << top_k << " for " << E << " experts";
  check_dtype(expert, DType::kI32, op, "expert");
  check_same_device(expert, logits, op, "expert", "logits");
  LINEA_CHECK(expert.numel() == N * top_k)
      << op << ": expert " << describe(expert) << " for " << N * top_k << " copies";
  check_f32(weight, logits, N * top_k, op, "weight");
  check_f32(score, logits, N * E, op, "score");
  check_f32(prob, logits, N * E, op, "prob");
  check_f32(lse, logits, N, op, "lse");
}

}  // namespace

void moe_route_forward(const Tensor& logits, const Tensor& bias, int64_t top_k, bool sigmoid,
                       bool normalise, double routed_scaling, Tensor& expert, Tensor& weight,
                       Tensor& score, Tensor& prob, Tensor& lse, Tensor& stats) {
  const char* op = "moe_route_forward";
  check_route(logits, top_k, expert, weight, score, prob, lse, op);
  const int64_t N = logits.dim(0), E = logits.dim(1);
  if (sigmoid) check_f32(bias, logits, E, op, "bias");
  check_dtype(stats, DType::kF64, op, "stats");
  check_same_device(stats, logits, op, "stats", "logits");
  LINEA_CHECK(stats.numel() == N * top_k + E + 1)
      << op << ": stats " << describe(stats) << ", expected " << N * top_k + E + 1 << " values";
  OnDevice dev(logits);
  Tensor q = Tensor::empty({N, E}, DType::kF32, logits.device());
  const size_t smem = kWarps * E * (2 * sizeof(float) + 1);
  LINEA_CHECK(smem <= 48 * 1024) << op << ": " << E << " experts need " << smem
                                 << " bytes of shared memory, more than 48 KiB";
  if (N > 0) {
    const int grid = grid_for((N + kWarps - 1) / kWarps, 1, dev.index, 16);
    dispatch(logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      route_forward_kernel<T><<<grid, 32 * kWarps, smem, dev.stream>>>(
          ptr<T>(logits), sigmoid ? bias.data<float>() : nullptr, N, static_cast<int>(E),
          static_cast<int>(top_k), sigmoid, normalise, static_cast<float>(routed_scaling),
          expert.data<int32_t>(), weight.data<float>(), score.data<float>(), prob.data<float>(),
          q.data<float>(), lse.data<float>(), stats.data<double>());
    });
    CUDA_CHECK_LAUNCH();
  }
  route_sums_kernel<<<static_cast<int>(E + 1), 256, 0, dev.stream>>>(
      q.data<float>(), lse.data<float>(), N, static_cast<int>(E), stats.data<double>() + N * top_k);
  CUDA_CHECK_LAUNCH();
}

void moe_route_backward(const Tensor& dweight, const Tensor& expert, const Tensor& weight,
                        const Tensor& score, const Tensor& prob, const Tensor& lse,
                        const Tensor& daux, int64_t top_k, double aux_scale, double dz_coeff,
                        bool sigmoid, bool normalise, double routed_scaling, Tensor& dlogits) {
  const char* op = "moe_route_backward";
  check_route(dlogits, top_k, expert, weight, score, prob, lse, op);
  const int64_t N = dlogits.dim(0), E = dlogits.dim(1);
  check_f32(dweight, dlogits, N * top_k, op, "dweight");
  check_f32(daux, dlogits, E, op, "daux");
  if (N == 0) return;
  OnDevice dev(dlogits);
  const int grid = grid_for((N + kWarps - 1) / kWarps, 1, dev.index, 16);
  dispatch(dlogits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    route_backward_kernel<T><<<grid, 32 * kWarps, 0, dev.stream>>>(
        dweight.data<float>(), expert.data<int32_t>(), weight.data<float>(), score.data<float>(),
        prob.data<float>(), lse.data<float>(), daux.data<float>(), N, static_cast<int>(E),
        static_cast<int>(top_k), static_cast<float>(aux_scale), static_cast<float>(dz_coeff),
        sigmoid, normalise, static_cast<float>(routed_scaling), ptr<T>(dlogits));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace linea::kernels::cuda
