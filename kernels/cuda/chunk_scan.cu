// The chunked causal scan (contract in kernels/cuda/chunk_scan.h).
//
// One thread block of 4 warps per (batch, head, 64-wide slice of Dv); it walks the chunks in order
// (or in reverse). Warp w owns rows [16 w, 16 w + 16) of the chunk for the scores and the output,
// and rows [16 R w, 16 R (w + 1)) of the state (R = Dqk / 64 tile rows), whose f32 accumulator
// fragments stay in registers for the whole sequence. Per chunk:
//   1. load q, k [C, Dqk] and v' [C, 64] into shared memory (bf16, zero rows past T);
//   2. scores A = mask(q k^T) for the warp's rows (only the tiles the mask keeps), to bf16;
//   3. out = out_scale * (q S_bf16 + A v'), staged through shared memory to global;
//   4. S += k^T v' in registers, then S_bf16 refreshed for the next chunk.
#include <mma.h>

#include <string>

#include "core/util/check.h"
#include "kernels/cuda/chunk_scan.h"

namespace linea::kernels::cuda {
namespace {

using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kC = 64;     // chunk length
constexpr int kDvT = 64;   // Dv slice per block
constexpr int kWarps = 4;  // one per 16 rows of a chunk
constexpr int kPad = 8;    // bf16 row padding (16 bytes) against bank conflicts
constexpr int kFPad = 4;   // f32 row padding
constexpr int kLdV = kDvT + kPad;
constexpr int kLdA = kC + kPad;
constexpr int kLdF = kDvT + kFPad;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAT = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBT = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

template <int Dqk>
struct Smem {
  static constexpr int kLdQ = Dqk + kPad;
  static constexpr size_t q = 0;
  static constexpr size_t k = q + sizeof(bf16) * kC * kLdQ;
  static constexpr size_t v = k + sizeof(bf16) * kC * kLdQ;
  static constexpr size_t a = v + sizeof(bf16) * kC * kLdV;
  static constexpr size_t s = a + sizeof(bf16) * kC * kLdA;
  static constexpr size_t f = s + sizeof(bf16) * Dqk * kLdV;
  static constexpr size_t bytes = f + sizeof(float) * kWarps * 16 * kLdF;
};

// rows x width bf16 from global (row stride `stride` elements) into shared (ld), 16 bytes per
// access, rows >= valid zero-filled; each element times `scale` when scale != 1.
template <int Width>
__device__ void load_rows(bf16* dst, int ld, const bf16* src, int64_t stride, int valid,
                          float scale) {
  constexpr int kVecPerRow = Width / 8;
  for (int i = threadIdx.x; i < kC * kVecPerRow; i += blockDim.x) {
    const int r = i / kVecPerRow, c = (i % kVecPerRow) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < valid) val = *reinterpret_cast<const uint4*>(src + r * stride + c);
    if (scale != 1.0f) {
      bf16* e = reinterpret_cast<bf16*>(&val);
#pragma unroll
      for (int j = 0; j < 8; ++j) e[j] = __float2bfloat16(__bfloat162float(e[j]) * scale);
    }
    *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
  }
}

template <int Dqk, bool OutF32>
__global__ void __launch_bounds__(kWarps * 32) chunk_scan_kernel(ChunkScanArgs a) {
  using L = Smem<Dqk>;
  constexpr int kLdQ = L::kLdQ;
  constexpr int kR = Dqk / 16 / kWarps;  // state tile rows per warp
  constexpr int kKq = Dqk / 16;          // k-steps over Dqk
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem + L::q);
  bf16* sK = reinterpret_cast<bf16*>(smem + L::k);
  bf16* sV = reinterpret_cast<bf16*>(smem + L::v);
  bf16* sA = reinterpret_cast<bf16*>(smem + L::a);
  bf16* sS = reinterpret_cast<bf16*>(smem + L::s);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* sF = reinterpret_cast<float*>(smem + L::f) + warp * 16 * kLdF;

  const int bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const int dv0 = blockIdx.x * kDvT;
  const int64_t qk_stride = int64_t(a.H) * Dqk, v_stride = int64_t(a.H) * a.Dv;
  const bf16* q = a.q + int64_t(b) * a.T * qk_stride + int64_t(h) * Dqk;
  const bf16* k = a.k + int64_t(b) * a.T * qk_stride + int64_t(h) * Dqk;
  const bf16* v = a.v + int64_t(b) * a.T * v_stride + int64_t(h) * a.Dv + dv0;
  const int64_t out_off = int64_t(b) * a.T * v_stride + int64_t(h) * a.Dv + dv0;
  const int64_t state_off = int64_t(bh) * Dqk * a.Dv;

  // The state: warp w holds tile rows [kR w, kR (w + 1)) x the 4 tile columns of the slice.
  FragC S[kR][4];
#pragma unroll
  for (int i = 0; i < kR; ++i) {
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const int r0 = (kR * warp + i) * 16, c0 = dv0 + n * 16;
      if (!a.initial_state) {
        wmma::fill_fragment(S[i][n], 0.0f);
      } else if (a.initial_transposed) {
        wmma::load_matrix_sync(S[i][n], a.initial_state + state_off + int64_t(c0) * Dqk + r0, Dqk,
                               wmma::mem_col_major);
      } else {
        wmma::load_matrix_sync(S[i][n], a.initial_state + state_off + int64_t(r0) * a.Dv + c0, a.Dv,
                               wmma::mem_row_major);
      }
    }
  }
  // S in bf16 for the q S products: staged per tile row through the warp's f32 buffer.
  auto publish_state = [&]() {
#pragma unroll
    for (int i = 0; i < kR; ++i) {
#pragma unroll
      for (int n = 0; n < 4; ++n)
        wmma::store_matrix_sync(sF + n * 16, S[i][n], kLdF, wmma::mem_row_major);
      __syncwarp();
      const int r0 = (kR * warp + i) * 16;
      for (int e = lane; e < 16 * kDvT; e += 32) {
        const int r = e / kDvT, c = e % kDvT;
        sS[(r0 + r) * kLdV + c] = __float2bfloat16(sF[r * kLdF + c]);
      }
      __syncwarp();
    }
  };
  publish_state();

  const int chunks = (a.T + kC - 1) / kC;
  for (int step = 0; step < chunks; ++step) {
    const int c = a.reverse ? chunks - 1 - step : step;
    const int t0 = c * kC, valid = min(kC, a.T - t0);
    __syncthreads();  // the previous chunk's readers of sQ/sK/sV are done
    load_rows<Dqk>(sQ, kLdQ, q + t0 * qk_stride, qk_stride, valid, 1.0f);
    load_rows<Dqk>(sK, kLdQ, k + t0 * qk_stride, qk_stride, valid, 1.0f);
    load_rows<kDvT>(sV, kLdV, v + t0 * v_stride, v_stride, valid, a.v_scale);
    __syncthreads();  // chunk and (from publish_state) S_bf16 visible to every warp

    // 2. scores of the warp's 16 rows against the key tiles the mask keeps
    const int j_lo = a.reverse ? warp : 0, j_hi = a.reverse ? kWarps - 1 : warp;
    for (int j = j_lo; j <= j_hi; ++j) {
      FragC acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < kKq; ++kk) {
        FragA fa;
        FragBT fb;
        wmma::load_matrix_sync(fa, sQ + warp * 16 * kLdQ + kk * 16, kLdQ);
        wmma::load_matrix_sync(fb, sK + j * 16 * kLdQ + kk * 16, kLdQ);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(sF + j * 16, acc, kLdF, wmma::mem_row_major);
    }
    __syncwarp();
    for (int e = lane; e < 16 * kC; e += 32) {
      const int r = e / kC, s = e % kC, t = warp * 16 + r;
      const int j = s / 16;
      const bool keep = a.reverse ? (s >= t) : (s <= t);
      const float x = (keep && j >= j_lo && j <= j_hi) ? sF[r * kLdF + s] : 0.0f;
      sA[t * kLdA + s] = __float2bfloat16(x);
    }
    __syncwarp();

    // 3. out rows of this warp: q S + A v', scaled
    FragC o[4];
#pragma unroll
    for (int n = 0; n < 4; ++n) wmma::fill_fragment(o[n], 0.0f);
#pragma unroll
    for (int kk = 0; kk < kKq; ++kk) {
      FragA fa;
      wmma::load_matrix_sync(fa, sQ + warp * 16 * kLdQ + kk * 16, kLdQ);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        FragB fb;
        wmma::load_matrix_sync(fb, sS + kk * 16 * kLdV + n * 16, kLdV);
        wmma::mma_sync(o[n], fa, fb, o[n]);
      }
    }
    for (int j = j_lo; j <= j_hi; ++j) {
      FragA fa;
      wmma::load_matrix_sync(fa, sA + warp * 16 * kLdA + j * 16, kLdA);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        FragB fb;
        wmma::load_matrix_sync(fb, sV + j * 16 * kLdV + n * 16, kLdV);
        wmma::mma_sync(o[n], fa, fb, o[n]);
      }
    }
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
      for (int e = 0; e < o[n].num_elements; ++e) o[n].x[e] *= a.out_scale;
      wmma::store_matrix_sync(sF + n * 16, o[n], kLdF, wmma::mem_row_major);
    }
    __syncwarp();
    for (int e = lane; e < 16 * kDvT / 4; e += 32) {
      const int r = e / (kDvT / 4), c = (e % (kDvT / 4)) * 4, t = warp * 16 + r;
      if (t >= valid) continue;
      const float4 x = *reinterpret_cast<const float4*>(sF + r * kLdF + c);
      const int64_t off = out_off + int64_t(t0 + t) * v_stride + c;
      if constexpr (OutF32) {
        *reinterpret_cast<float4*>(static_cast<float*>(a.out) + off) = x;
      } else {
        __nv_bfloat162 lo = __floats2bfloat162_rn(x.x, x.y), hi = __floats2bfloat162_rn(x.z, x.w);
        uint2 packed;
        packed.x = *reinterpret_cast<uint32_t*>(&lo);
        packed.y = *reinterpret_cast<uint32_t*>(&hi);
        *reinterpret_cast<uint2*>(static_cast<bf16*>(a.out) + off) = packed;
      }
    }

    // 4. S += k^T v' (k^T read as a column-major view of sK)
#pragma unroll
    for (int i = 0; i < kR; ++i) {
      const int r0 = (kR * warp + i) * 16;
#pragma unroll
      for (int kk = 0; kk < kC / 16; ++kk) {
        FragAT fa;
        wmma::load_matrix_sync(fa, sK + kk * 16 * kLdQ + r0, kLdQ);
#pragma unroll
        for (int n = 0; n < 4; ++n) {
          FragB fb;
          wmma::load_matrix_sync(fb, sV + kk * 16 * kLdV + n * 16, kLdV);
          wmma::mma_sync(S[i][n], fa, fb, S[i][n]);
        }
      }
    }
    __syncthreads();  // every warp is done reading the old S_bf16
    publish_state();
  }

  if (a.final_state) {
#pragma unroll
    for (int i = 0; i < kR; ++i) {
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        const int r0 = (kR * warp + i) * 16, c0 = dv0 + n * 16;
        if (a.final_transposed)
          wmma::store_matrix_sync(a.final_state + state_off + int64_t(c0) * Dqk + r0, S[i][n], Dqk,
                                  wmma::mem_col_major);
        else
          wmma::store_matrix_sync(a.final_state + state_off + int64_t(r0) * a.Dv + c0, S[i][n],
                                  a.Dv, wmma::mem_row_major);
      }
    }
  }
}

template <int Dqk, bool OutF32>
void launch(const ChunkScanArgs& a, cudaStream_t stream) {
  constexpr size_t bytes = Smem<Dqk>::bytes;
  static bool configured = false;  // one attribute call per instantiation
  if (!configured) {
    const cudaError_t e = cudaFuncSetAttribute(
        chunk_scan_kernel<Dqk, OutF32>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    LINEA_CHECK(e == cudaSuccess) << "chunk_scan: cudaFuncSetAttribute: " << cudaGetErrorString(e);
    configured = true;
  }
  const dim3 grid(a.Dv / kDvT, a.B * a.H);
  chunk_scan_kernel<Dqk, OutF32><<<grid, kWarps * 32, bytes, stream>>>(a);
  const cudaError_t e = cudaGetLastError();
  LINEA_CHECK(e == cudaSuccess) << "chunk_scan: launch failed: " << cudaGetErrorString(e);
}

}  // namespace

void chunk_scan(const ChunkScanArgs& a, cudaStream_t stream) {
  LINEA_CHECK(a.q && a.k && a.v && a.out) << "chunk_scan: q, k, v and out must be set";
  LINEA_CHECK(a.Dqk == 64 || a.Dqk == 128)
      << "chunk_scan: Dqk = " << a.Dqk << " is not supported on CUDA (64 or 128)";
  LINEA_CHECK(a.Dv > 0 && a.Dv % kDvT == 0)
      << "chunk_scan: Dv = " << a.Dv << " must be a multiple of " << kDvT;
  LINEA_CHECK(a.B > 0 && a.H > 0 && a.T >= 0)
      << "chunk_scan: bad shape B " << a.B << " T " << a.T << " H " << a.H;
  if (a.T == 0 && !a.final_state) return;
  if (a.Dqk == 64)
    a.out_f32 ? launch<64, true>(a, stream) : launch<64, false>(a, stream);
  else
    a.out_f32 ? launch<128, true>(a, stream) : launch<128, false>(a, stream);
}

}  // namespace linea::kernels::cuda
