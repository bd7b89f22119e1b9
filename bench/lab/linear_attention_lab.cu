// Kernel lab for basic chunked linear attention on CUDA (kernels/cuda/chunk_scan.h): the CPU
// reference (token by token, f64, on the same bf16-rounded inputs), a validate step for the
// forward and the three backward scans on random shapes (partial chunks, incoming and outgoing
// states, Dk != Dv), and a timing step at the shapes of shared GPU.md (CUDA events after warm-up,
// median of many runs). Prints a table and writes JSON (argv[1], default
// lab_linear_attention.json).
//
// Built as the target linear_attention_lab with the CUDA backend; bench/gpu_check.sh runs it:
//   build-gpu/bench/linear_attention_lab OUT.json
//
// Versions tried (newest last; the one in kernels/cuda/chunk_scan.cu is the winner so far):
//   v1  one block of 4 warps per (b, h, 64 columns of Dv), sequential over chunks, WMMA bf16,
//       state in f32 registers; backward = three more scans (dq forward, dk and dv reversed).
//       B8 T4096 H8 D128: 1.070 / 4.236 ms; B1 T65536 H16: 17.0 / 68.1 ms (fla: 0.192 / 1.012,
//       0.998 / 5.597): latency-bound, 16.7 us per chunk step, 128 blocks for 132 SMs.
//   v2  cp.async double buffer (the next chunk loads during this one), vectorised f32->bf16
//       staging, v_scale folded into the state, and segments: a state pass + a prefix over
//       segments give every segment its incoming state, so about 2 blocks per SM run.
//       0.574 / 2.319 ms; 2.312 / 9.230 ms: 8.7 us per chunk step, still latency-bound (one
//       warp per scheduler, 130 KB of shared memory: one block per SM).
//   v3  8 warps per block (two per row group: score tiles split by parity, output columns by
//       half), the warp's q fragments loaded once for the scores and q S.
//       0.557 / 2.258 ms; 0.968 / 3.885 ms (B4 T8192 H16); 2.207 / 8.783 ms: the warps were not
//       the limit. About 68 TFLOP/s of tensor work: next, profile (ncu) the per-chunk critical
//       path (4 block barriers, f32 staging of scores, outputs and state through shared memory)
//       and move to raw mma.sync with register-resident operands or wgmma.
//   v4  a scalar log decay per token and head (Lightning, RetNet, Mamba2, simple GLA): in-chunk
//       cumulative decays in shared memory, decayed scores, q S and state update; the backward
//       scans shift the decay by one token, and dg = a reverse cumulative sum of
//       q . dq - k . dk plus <dS_out, S_out> (chunk_scan_decay_grad).
//       No decay: 0.594 / 2.403 ms (the separate q S and A v accumulators cost 5%); decay:
//       0.847 / 3.531 ms at B8 T4096 H8, 3.793 / 15.613 ms at B1 T65536 H16 (fla lightning:
//       0.344 / 1.722, 1.304 / 5.363).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/chunk_scan.h"

#define LAB_CHECK(x)                                                                           \
  do {                                                                                         \
    cudaError_t e_ = (x);                                                                      \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

namespace {

using linea::kernels::cuda::chunk_scan;
using linea::kernels::cuda::chunk_scan_decay_grad;
using linea::kernels::cuda::chunk_scan_segments;
using linea::kernels::cuda::chunk_scan_workspace_bytes;
using linea::kernels::cuda::ChunkScanArgs;
using bf16 = __nv_bfloat16;

struct Shape {
  int B, T, H, Dk, Dv;
  int segments = 0;    // 0: chunk_scan chooses
  bool decay = false;  // a scalar log decay per token and head (Lightning, Mamba2, simple GLA)
};

// Host tensors: values already rounded through bf16 (what the GPU sees).
std::vector<float> random_bf16(size_t n, std::mt19937& g, float std) {
  std::normal_distribution<float> d(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = __bfloat162float(__float2bfloat16(d(g)));
  return v;
}

struct Device {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Device(size_t b) : bytes(b) { LAB_CHECK(cudaMalloc(&p, b)); }
  Device(Device&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  Device(const Device&) = delete;
  Device& operator=(Device&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  ~Device() {
    if (p) cudaFree(p);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

Device to_device_bf16(const std::vector<float>& h) {
  std::vector<bf16> b(h.size());
  for (size_t i = 0; i < h.size(); ++i) b[i] = __float2bfloat16(h[i]);
  Device d(b.size() * sizeof(bf16));
  LAB_CHECK(cudaMemcpy(d.p, b.data(), d.bytes, cudaMemcpyHostToDevice));
  return d;
}
Device to_device_f32(const std::vector<float>& h) {
  Device d(h.size() * sizeof(float));
  LAB_CHECK(cudaMemcpy(d.p, h.data(), d.bytes, cudaMemcpyHostToDevice));
  return d;
}
std::vector<float> from_device_bf16(const Device& d, size_t n) {
  std::vector<bf16> b(n);
  LAB_CHECK(cudaMemcpy(b.data(), d.p, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(b[i]);
  return out;
}
std::vector<float> from_device_f32(const Device& d, size_t n) {
  std::vector<float> out(n);
  LAB_CHECK(cudaMemcpy(out.data(), d.p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return out;
}

// ---- the CPU reference (f64, token by token) for heads (b, h) in `heads` ----------------------
struct Reference {
  std::vector<double> o, dq, dk, dv, s_out, ds_in, dg;  // full-size, only the chosen heads filled
  bool has_dg = false;
};

// S_t = exp(g_t) S_{t-1} + k_t^T v_t (g empty: no decay). dg_t = <dS_t, exp(g_t) S_{t-1}> needs
// every state, so it is computed only where they fit (want_dg).
Reference reference(const Shape& s, const std::vector<std::pair<int, int>>& heads, double scale,
                    const std::vector<float>& q, const std::vector<float>& k,
                    const std::vector<float>& v, const std::vector<float>& g,
                    const std::vector<float>& s_in, const std::vector<float>& d_o,
                    const std::vector<float>& ds_out, bool want_dg) {
  const int T = s.T, H = s.H, Dk = s.Dk, Dv = s.Dv;
  Reference r;
  r.o.assign(size_t(s.B) * T * H * Dv, 0);
  r.dq.assign(size_t(s.B) * T * H * Dk, 0);
  r.dk.assign(r.dq.size(), 0);
  r.dv.assign(r.o.size(), 0);
  r.s_out.assign(size_t(s.B) * H * Dk * Dv, 0);
  r.ds_in.assign(r.s_out.size(), 0);
  r.dg.assign(size_t(s.B) * T * H, 0);
  r.has_dg = want_dg && !g.empty();
  auto gi = [&](int b, int t, int h) { return (size_t(b) * T + t) * H + h; };
  auto decay = [&](int b, int t, int h) {
    return g.empty() ? 1.0 : std::exp(double(g[gi(b, t, h)]));
  };
  std::vector<double> states;  // S_{t-1} for every t, when dg is wanted
  auto qi = [&](int b, int t, int h) { return (size_t(b) * T + t) * H * Dk + size_t(h) * Dk; };
  auto vi = [&](int b, int t, int h) { return (size_t(b) * T + t) * H * Dv + size_t(h) * Dv; };
  std::vector<double> S(size_t(Dk) * Dv), dS(size_t(Dk) * Dv);
  for (auto [b, h] : heads) {
    const size_t so = (size_t(b) * H + h) * Dk * Dv;
    for (size_t i = 0; i < S.size(); ++i) S[i] = s_in[so + i];
    if (r.has_dg) states.assign(size_t(T) * S.size(), 0);
    for (int t = 0; t < T; ++t) {
      const float *qt = &q[qi(b, t, h)], *kt = &k[qi(b, t, h)], *vt = &v[vi(b, t, h)];
      const float* dot = &d_o[vi(b, t, h)];
      if (r.has_dg) std::copy(S.begin(), S.end(), states.begin() + size_t(t) * S.size());
      const double lam = decay(b, t, h);
      for (auto& x : S) x *= lam;
      for (int i = 0; i < Dk; ++i)
        for (int j = 0; j < Dv; ++j) S[size_t(i) * Dv + j] += double(kt[i]) * vt[j];
      for (int j = 0; j < Dv; ++j) {
        double acc = 0;
        for (int i = 0; i < Dk; ++i) acc += double(qt[i]) * S[size_t(i) * Dv + j];
        r.o[vi(b, t, h) + j] = scale * acc;
      }
      for (int i = 0; i < Dk; ++i) {  // dq_t = scale dO_t S_t^T
        double acc = 0;
        for (int j = 0; j < Dv; ++j) acc += double(dot[j]) * S[size_t(i) * Dv + j];
        r.dq[qi(b, t, h) + i] = scale * acc;
      }
    }
    for (size_t i = 0; i < S.size(); ++i) r.s_out[so + i] = S[i];
    for (size_t i = 0; i < dS.size(); ++i) dS[i] = ds_out[so + i];
    for (int t = T - 1; t >= 0; --t) {
      const float *qt = &q[qi(b, t, h)], *kt = &k[qi(b, t, h)], *vt = &v[vi(b, t, h)];
      const float* dot = &d_o[vi(b, t, h)];
      for (int i = 0; i < Dk; ++i)
        for (int j = 0; j < Dv; ++j) dS[size_t(i) * Dv + j] += scale * double(qt[i]) * dot[j];
      for (int i = 0; i < Dk; ++i) {  // dk_t = v_t dS_t^T
        double acc = 0;
        for (int j = 0; j < Dv; ++j) acc += double(vt[j]) * dS[size_t(i) * Dv + j];
        r.dk[qi(b, t, h) + i] = acc;
      }
      for (int j = 0; j < Dv; ++j) {  // dv_t = k_t dS_t
        double acc = 0;
        for (int i = 0; i < Dk; ++i) acc += double(kt[i]) * dS[size_t(i) * Dv + j];
        r.dv[vi(b, t, h) + j] = acc;
      }
      const double lam = decay(b, t, h);
      if (r.has_dg) {  // dg_t = <dS_t, exp(g_t) S_{t-1}>
        double acc = 0;
        const double* prev = &states[size_t(t) * S.size()];
        for (size_t i = 0; i < S.size(); ++i) acc += dS[i] * lam * prev[i];
        r.dg[gi(b, t, h)] = acc;
      }
      for (auto& x : dS) x *= lam;  // to dS_{t-1}
    }
    for (size_t i = 0; i < dS.size(); ++i) r.ds_in[so + i] = dS[i];
  }
  return r;
}

// max |gpu - ref| / max |ref| over the chosen heads ([B, T, H, D] or [B, H, Dk, Dv] layouts).
double rel_error(const std::vector<float>& got, const std::vector<double>& ref, const Shape& s,
                 int D, bool state, const std::vector<std::pair<int, int>>& heads) {
  double worst = 0, scale = 0;
  for (auto [b, h] : heads) {
    if (state) {
      const size_t o = (size_t(b) * s.H + h) * s.Dk * s.Dv;
      for (size_t i = 0; i < size_t(s.Dk) * s.Dv; ++i) {
        worst = std::max(worst, std::abs(got[o + i] - ref[o + i]));
        scale = std::max(scale, std::abs(ref[o + i]));
      }
      continue;
    }
    for (int t = 0; t < s.T; ++t) {
      const size_t o = (size_t(b) * s.T + t) * s.H * D + size_t(h) * D;
      for (int i = 0; i < D; ++i) {
        worst = std::max(worst, std::abs(got[o + i] - ref[o + i]));
        scale = std::max(scale, std::abs(ref[o + i]));
      }
    }
  }
  return scale > 0 ? worst / scale : worst;
}

// max |gpu - ref| / max |ref| of dg [B, T, H] over the chosen heads.
double rel_error_dg(const std::vector<float>& got, const std::vector<double>& ref, const Shape& s,
                    const std::vector<std::pair<int, int>>& heads) {
  double worst = 0, scale = 0;
  for (auto [b, h] : heads)
    for (int t = 0; t < s.T; ++t) {
      const size_t i = (size_t(b) * s.T + t) * s.H + h;
      worst = std::max(worst, std::abs(got[i] - ref[i]));
      scale = std::max(scale, std::abs(ref[i]));
    }
  return scale > 0 ? worst / scale : worst;
}

// The forward and the three backward scans (plus the decay gradient) on device buffers.
struct Buffers {
  Device q, k, v, d_o, s_in, ds_out, o, dq, dk, dv, s_out, ds_in;
  Device workspace{256};
  Device g{256}, dg{256};
  bool decay = false;
};

ChunkScanArgs base_args(const Shape& s, int Dqk, int Dv) {
  ChunkScanArgs a;
  a.B = s.B, a.T = s.T, a.H = s.H, a.Dqk = Dqk, a.Dv = Dv, a.segments = s.segments;
  return a;
}

void run_forward(const Shape& s, Buffers& b, float scale, cudaStream_t st) {
  ChunkScanArgs a = base_args(s, s.Dk, s.Dv);
  a.workspace = b.workspace.as<float>();
  a.q = b.q.as<bf16>(), a.k = b.k.as<bf16>(), a.v = b.v.as<bf16>(), a.out = b.o.p;
  a.initial_state = b.s_in.as<float>(), a.final_state = b.s_out.as<float>();
  a.out_scale = scale;
  if (b.decay) a.g = b.g.as<float>();
  chunk_scan(a, st);
}

void run_backward(const Shape& s, Buffers& b, float scale, cudaStream_t st) {
  ChunkScanArgs dq = base_args(s, s.Dv, s.Dk);  // dq = scan(dO, v, k), state S^T
  dq.workspace = b.workspace.as<float>();
  dq.q = b.d_o.as<bf16>(), dq.k = b.v.as<bf16>(), dq.v = b.k.as<bf16>(), dq.out = b.dq.p;
  dq.initial_state = b.s_in.as<float>(), dq.initial_transposed = true;
  dq.out_scale = scale;
  if (b.decay) dq.g = b.g.as<float>();
  chunk_scan(dq, st);
  // dv = scan(k, q, dO) reversed, state dS; its final state is dS_in
  ChunkScanArgs dv = base_args(s, s.Dk, s.Dv);
  dv.workspace = b.workspace.as<float>();
  dv.q = b.k.as<bf16>(), dv.k = b.q.as<bf16>(), dv.v = b.d_o.as<bf16>(), dv.out = b.dv.p;
  dv.initial_state = b.ds_out.as<float>(), dv.final_state = b.ds_in.as<float>();
  dv.v_scale = scale;
  dv.reverse = true;
  if (b.decay) dv.g = b.g.as<float>(), dv.g_shift = true, dv.final_decay = true;
  chunk_scan(dv, st);
  ChunkScanArgs dk = base_args(s, s.Dv, s.Dk);  // dk = scan(v, dO, q) reversed, state dS^T
  dk.workspace = b.workspace.as<float>();
  dk.q = b.v.as<bf16>(), dk.k = b.d_o.as<bf16>(), dk.v = b.q.as<bf16>(), dk.out = b.dk.p;
  dk.initial_state = b.ds_out.as<float>(), dk.initial_transposed = true;
  dk.v_scale = scale;
  dk.reverse = true;
  if (b.decay) dk.g = b.g.as<float>(), dk.g_shift = true;
  chunk_scan(dk, st);
  if (b.decay)
    chunk_scan_decay_grad(b.q.as<bf16>(), b.k.as<bf16>(), b.dq.p, b.dk.p, false,
                          b.s_out.as<float>(), b.ds_out.as<float>(), s.B, s.T, s.H, s.Dk, s.Dv,
                          b.dg.as<float>(), st);
}

struct Result {
  Shape s;
  double err_o, err_s, err_dq, err_dk, err_dv, err_ds, err_dg = 0;
  double fwd_ms = 0, fwdbwd_ms = 0;
};

Result validate_and_time(const Shape& s, bool time_it, uint32_t seed) {
  std::mt19937 gen(seed);
  const size_t nq = size_t(s.B) * s.T * s.H * s.Dk, nv = size_t(s.B) * s.T * s.H * s.Dv;
  const size_t ns = size_t(s.B) * s.H * s.Dk * s.Dv;
  const float scale = 1.0f / std::sqrt(float(s.Dk));
  auto q = random_bf16(nq, gen, 1.0f), k = random_bf16(nq, gen, 1.0f);
  auto v = random_bf16(nv, gen, 1.0f), d_o = random_bf16(nv, gen, 1.0f);
  std::vector<float> g;
  if (s.decay) {  // log decays in [-0.35, -0.05] per token: a strong decay over a 64-token chunk
    std::uniform_real_distribution<float> ud(0.0f, 1.0f);
    g.resize(size_t(s.B) * s.T * s.H);
    for (auto& x : g) x = -0.05f - 0.3f * ud(gen);
  }
  std::vector<float> s_in(ns), ds_out(ns);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : s_in) x = nd(gen);
  for (auto& x : ds_out) x = nd(gen);
  Buffers b{to_device_bf16(q),         to_device_bf16(k),          to_device_bf16(v),
            to_device_bf16(d_o),       to_device_f32(s_in),        to_device_f32(ds_out),
            Device(nv * sizeof(bf16)), Device(nq * sizeof(bf16)),  Device(nq * sizeof(bf16)),
            Device(nv * sizeof(bf16)), Device(ns * sizeof(float)), Device(ns * sizeof(float))};
  const size_t ws = std::max(chunk_scan_workspace_bytes(base_args(s, s.Dk, s.Dv)),
                             chunk_scan_workspace_bytes(base_args(s, s.Dv, s.Dk)));
  if (ws > 0) b.workspace = Device(ws);
  if (s.decay) {
    b.decay = true;
    b.g = to_device_f32(g);
    b.dg = Device(g.size() * sizeof(float));
  }
  cudaStream_t st;
  LAB_CHECK(cudaStreamCreate(&st));
  run_forward(s, b, scale, st);
  run_backward(s, b, scale, st);
  LAB_CHECK(cudaStreamSynchronize(st));

  std::vector<std::pair<int, int>> heads = {{0, 0}, {s.B - 1, s.H - 1}};
  if (s.B * s.H <= 8) {
    heads.clear();
    for (int bb = 0; bb < s.B; ++bb)
      for (int h = 0; h < s.H; ++h) heads.push_back({bb, h});
  }
  // dg needs every state of the reference: only where they fit in about 256 MB.
  const bool want_dg = double(s.T) * s.Dk * s.Dv * 8 < 2.6e8;
  const Reference ref = reference(s, heads, scale, q, k, v, g, s_in, d_o, ds_out, want_dg);
  Result r{s};
  r.err_o = rel_error(from_device_bf16(b.o, nv), ref.o, s, s.Dv, false, heads);
  r.err_s = rel_error(from_device_f32(b.s_out, ns), ref.s_out, s, 0, true, heads);
  r.err_dq = rel_error(from_device_bf16(b.dq, nq), ref.dq, s, s.Dk, false, heads);
  r.err_dk = rel_error(from_device_bf16(b.dk, nq), ref.dk, s, s.Dk, false, heads);
  r.err_dv = rel_error(from_device_bf16(b.dv, nv), ref.dv, s, s.Dv, false, heads);
  r.err_ds = rel_error(from_device_f32(b.ds_in, ns), ref.ds_in, s, 0, true, heads);
  if (ref.has_dg) r.err_dg = rel_error_dg(from_device_f32(b.dg, g.size()), ref.dg, s, heads);

  if (time_it) {
    cudaEvent_t e0, e1;
    LAB_CHECK(cudaEventCreate(&e0));
    LAB_CHECK(cudaEventCreate(&e1));
    auto median_ms = [&](auto&& fn) {
      for (int i = 0; i < 5; ++i) fn();
      std::vector<float> ms;
      for (int i = 0; i < 30; ++i) {
        LAB_CHECK(cudaEventRecord(e0, st));
        fn();
        LAB_CHECK(cudaEventRecord(e1, st));
        LAB_CHECK(cudaEventSynchronize(e1));
        float m = 0;
        LAB_CHECK(cudaEventElapsedTime(&m, e0, e1));
        ms.push_back(m);
      }
      std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
      return double(ms[ms.size() / 2]);
    };
    r.fwd_ms = median_ms([&] { run_forward(s, b, scale, st); });
    r.fwdbwd_ms = median_ms([&] {
      run_forward(s, b, scale, st);
      run_backward(s, b, scale, st);
    });
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  cudaStreamDestroy(st);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string json_path = argc > 1 ? argv[1] : "lab_linear_attention.json";
  int dev = 0;
  cudaDeviceProp prop{};
  LAB_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  // bf16 inputs and outputs, f32 states: errors relative to the largest reference value.
  const double tol = 2e-2;
  bool ok = true;
  std::vector<Result> results;
  // Without and with a scalar decay; partial chunks, Dk != Dv, forced segment counts.
  std::vector<Shape> checks, timed;
  for (bool decay : {false, true}) {
    for (Shape s : std::vector<Shape>{{2, 200, 3, 64, 64},
                                      {1, 130, 2, 128, 128},
                                      {2, 64, 2, 64, 128},
                                      {1, 300, 1, 128, 64},
                                      {1, 1, 1, 64, 64},
                                      {3, 257, 2, 64, 128},
                                      {2, 700, 2, 128, 128, 3},
                                      {1, 1000, 1, 64, 128, 5},
                                      {2, 640, 1, 128, 64, 10}}) {
      s.decay = decay;
      checks.push_back(s);
    }
    for (Shape s : std::vector<Shape>{
             {8, 4096, 8, 128, 128}, {4, 8192, 16, 128, 128}, {1, 65536, 16, 128, 128}}) {
      s.decay = decay;
      timed.push_back(s);
    }
  }
  std::printf("%-26s %4s %9s %9s %9s %9s %9s %9s %9s %10s %12s\n", "shape B,T,H,Dk,Dv", "seg", "o",
              "S_out", "dq", "dk", "dv", "dS_in", "dg", "fwd ms", "fwd+bwd ms");
  uint32_t seed = 1;
  for (bool timing : {false, true}) {
    for (const Shape& s : timing ? timed : checks) {
      Result r = validate_and_time(s, timing, seed++);
      const double worst =
          std::max({r.err_o, r.err_s, r.err_dq, r.err_dk, r.err_dv, r.err_ds, r.err_dg});
      ok = ok && worst < tol;
      char name[64];
      std::snprintf(name, sizeof name, "%d,%d,%d,%d,%d%s", s.B, s.T, s.H, s.Dk, s.Dv,
                    s.decay ? " decay" : "");
      std::printf("%-26s %4d %9.2e %9.2e %9.2e %9.2e %9.2e %9.2e %9.2e %10.3f %12.3f %s\n", name,
                  chunk_scan_segments(base_args(s, s.Dk, s.Dv)), r.err_o, r.err_s, r.err_dq,
                  r.err_dk, r.err_dv, r.err_ds, r.err_dg, r.fwd_ms, r.fwdbwd_ms,
                  worst < tol ? "ok" : "FAIL");
      std::fflush(stdout);
      results.push_back(r);
    }
  }
  std::ofstream js(json_path);
  js << "{\"op\": \"linear_attention_chunk_scan\", \"device\": \"" << prop.name
     << "\", \"tolerance\": " << tol << ", \"results\": [";
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    js << (i ? ", " : "") << "{\"B\": " << r.s.B << ", \"T\": " << r.s.T << ", \"H\": " << r.s.H
       << ", \"Dk\": " << r.s.Dk << ", \"Dv\": " << r.s.Dv
       << ", \"decay\": " << (r.s.decay ? "true" : "false") << ", \"err_dg\": " << r.err_dg
       << ", \"segments\": " << chunk_scan_segments(base_args(r.s, r.s.Dk, r.s.Dv))
       << ", \"err_o\": " << r.err_o << ", \"err_state\": " << r.err_s
       << ", \"err_dq\": " << r.err_dq << ", \"err_dk\": " << r.err_dk
       << ", \"err_dv\": " << r.err_dv << ", \"err_dstate\": " << r.err_ds
       << ", \"fwd_ms\": " << r.fwd_ms << ", \"fwd_bwd_ms\": " << r.fwdbwd_ms << "}";
  }
  js << "], \"pass\": " << (ok ? "true" : "false") << "}\n";
  std::printf("%s (tolerance %.0e relative to the largest reference value)\n",
              ok ? "all within tolerance" : "SOME FAILED", tol);
  return ok ? 0 : 1;
}
