// CUDA RoPE (kernels/rope.h). A [T, D/2] table of (cos, sin) is built first, angles and both
// functions in f64 and rounded to f32 as the CPU does; then every channel pair of every
// (batch, token, head) turns in f32, 16-byte packs of pairs where D/2 allows. Each pair is read
// before it is written by the same thread: in place is safe.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

const char* kEvenHint =
    "RoPE rotates channel pairs (i, i + D/2), so the head dimension must be even; choose "
    "hidden_size / num_heads even";

__global__ void rope_table_kernel(int64_t seq, int64_t half, int64_t d, double theta, int64_t pos0,
                                  double sign, float2* table) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < seq * half;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / half, i = idx % half;
    const double inv_freq = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    const double a = static_cast<double>(pos0 + t) * inv_freq;
    double s, c;
    sincos(a, &s, &c);
    table[idx] = make_float2(static_cast<float>(c), static_cast<float>(sign * s));
  }
}

// One thread per N consecutive pairs (i .. i+N-1 with their partners i+D/2 ..) of one
// (batch, token, head) row; 32-bit index arithmetic (the launch checks that it fits).
template <typename T, int N>
__global__ void rope_apply_kernel(const T* src, const float2* table, uint32_t items, uint32_t seq,
                                  uint32_t heads, uint32_t half, T* dst) {
  const uint32_t packs = half / N;
  for (uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x; idx < items;
       idx += gridDim.x * blockDim.x) {
    const uint32_t p = idx % packs, head_row = idx / packs;  // head_row = (b * T + t) * H + h
    const uint32_t t = (head_row / heads) % seq;
    const T* in = src + static_cast<int64_t>(head_row) * 2 * half;
    T* out = dst + static_cast<int64_t>(head_row) * 2 * half;
    const Pack<T, N> a = load_pack<T, N>(in, p), b = load_pack<T, N>(in + half, p);
    const float2* cs = table + static_cast<int64_t>(t) * half + p * N;
    Pack<T, N> ya, yb;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const float2 c = cs[e];
      const float x1 = to_float(a.v[e]), x2 = to_float(b.v[e]);
      ya.v[e] = from_float<T>(x1 * c.x - x2 * c.y);
      yb.v[e] = from_float<T>(x2 * c.x + x1 * c.y);
    }
    store_pack<T, N>(out, p, ya);
    store_pack<T, N>(out + half, p, yb);
  }
}

void check_rope(const Tensor& in, const RopeParams& p, const Tensor& out, const char* op,
                const char* in_name, const char* out_name) {
  check_float(in, op, in_name);
  LINEA_CHECK(in.ndim() == 4) << op << ": " << in_name << " must be [B, T, H, D], got "
                              << shape_str(in.shape());
  LINEA_USER_CHECK(in.dim(3) % 2 == 0, kEvenHint)
      << op << ": head dimension D = " << in.dim(3) << " is odd";
  check_same_shape(out, in, op, out_name, in_name);
  LINEA_CHECK(p.pos_offset >= 0) << op << ": pos_offset " << p.pos_offset << " must be >= 0";
  LINEA_CHECK(p.theta > 0) << op << ": theta " << p.theta << " must be positive";
}

void rotate(const Tensor& in, const RopeParams& p, double sign, Tensor& out) {
  const int64_t seq = in.dim(1), heads = in.dim(2), half = in.dim(3) / 2;
  const int64_t pairs = in.numel() / 2;
  if (pairs == 0) return;
  OnDevice dev(in);
  // float2 per (t, i): 8 bytes, from the caching allocator (freed in stream order).
  Tensor table = Tensor::empty({seq, half, 2}, DType::kF32, in.device());
  auto* cs = reinterpret_cast<float2*>(table.data<float>());
  const int block = 256;
  rope_table_kernel<<<grid_for(seq * half, block, dev.index), block, 0, dev.stream>>>(
      seq, half, in.dim(3), p.theta, p.pos_offset, sign, cs);
  CUDA_CHECK_LAUNCH();
  LINEA_CHECK(pairs < (int64_t(1) << 31)) << "rope: " << pairs << " channel pairs in one call";
  dispatch(in.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    // Packs need D/2 to be whole 16-byte pieces, so that both halves of a row stay aligned.
    const bool vec = half % V == 0 && aligned16(in.raw()) && aligned16(out.raw());
    const int n_pack = vec ? V : 1;
    const uint32_t items = static_cast<uint32_t>(pairs / n_pack);
    const int grid = grid_for(items, block, dev.index);
    if (vec) {
      rope_apply_kernel<T, V>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(in), cs, items, seq, heads, half, ptr<T>(out));
    } else {
      rope_apply_kernel<T, 1>
          <<<grid, block, 0, dev.stream>>>(ptr<T>(in), cs, items, seq, heads, half, ptr<T>(out));
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_forward(const Tensor& x, const RopeParams& p, Tensor& y) {
  check_rope(x, p, y, "rope_forward", "x", "y");
  rotate(x, p, 1.0, y);
}

void rope_backward(const Tensor& dy, const RopeParams& p, Tensor& dx) {
  check_rope(dy, p, dx, "rope_backward", "dy", "dx");
  rotate(dy, p, -1.0, dx);
}

}  // namespace linea::kernels::cuda
