// CUDA gated linear attention (kernels/gated_linear_attention.h) for a scalar key-side decay per
// token and head, gk [B, T, H] (Mamba2, simple GLA; Lightning and RetNet pass their constant
// log(lambda_h)), without a value-side gate: the chunk scan with its decay (kernels/cuda/
// chunk_scan.h). Forward: one scan. Backward: the dq scan, the two reversed scans (dk; dv with
// dS_in) with the decay shifted by one token, and dgk from chunk_scan_decay_grad, which needs the
// forward's final state when a gradient reaches it (recomputed by a state-only scan). What differs
// from the CPU contract:
//  - a vector gate (gk [B, T, H, Dk]: GLA, HGRN2) runs the vector-decay scan instead
//    (kernels/cuda/vector_decay_scan.h: tensor cores on sub-chunks, q, k, v of one dtype); a
//    value-side gate gv [B, T, H, Dv] without gk (GSA's first pass) runs the value-decay scan
//    (kernels/cuda/value_decay_scan.h: f32 on CUDA cores, q, k, v of one dtype); gk and gv
//    together are refused with a message;
//  - q, k, v, dO enter the tensor cores in bf16; the gates, states and dgk are f32;
//  - the chunk is always 64 tokens and T need not divide; Dk in {64, 128} with gates, any Dk
//    without (blocks of key columns, below), Dv a multiple of 64.
#include <algorithm>
#include <vector>

#include "kernels/cuda/chunk_scan.h"
#include "kernels/cuda/column_sum.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/value_decay_scan.h"
#include "kernels/cuda/vector_decay_scan.h"

namespace linea::kernels::cuda {
namespace {

// t itself, or a bf16 copy of an f32 tensor (what the tensor cores take).
Tensor as_bf16(const Tensor& t) { return t.dtype() == DType::kBF16 ? t : t.to(DType::kBF16); }

struct Dims {
  int B, T, H, Dk, Dv;
};

Dims check_args(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gk,
                const Tensor& gv, const Tensor& initial_state, const char* op) {
  check_float(q, op, "q");
  check_float(k, op, "k");
  check_float(v, op, "v");
  LINEA_CHECK(q.ndim() == 4 && k.shape() == q.shape() && v.ndim() == 4 && v.dim(0) == q.dim(0) &&
              v.dim(1) == q.dim(1) && v.dim(2) == q.dim(2))
      << op << ": q " << describe(q) << ", k " << describe(k) << ", v " << describe(v)
      << " must be [B, T, H, Dk], [B, T, H, Dk], [B, T, H, Dv]";
  const Dims d{int(q.dim(0)), int(q.dim(1)), int(q.dim(2)), int(q.dim(3)), int(v.dim(3))};
  if (gv.defined()) {
    LINEA_CHECK(!gk.defined())
        << op << ": gk " << describe(gk) << " and gv " << describe(gv)
        << " together (a decay on both sides) are not supported on CUDA; one gate at a time";
    check_cuda(gv, op, "gv");
    check_same_device(gv, q, op, "gv", "q");
    const Shape vector{d.B, d.T, d.H, d.Dv};
    LINEA_CHECK(gv.dtype() == DType::kF32 && gv.shape() == vector)
        << op << ": gv " << describe(gv) << " must be f32 [B, T, H, Dv] on CUDA";
  }
  if (gk.defined()) {
    check_cuda(gk, op, "gk");
    check_same_device(gk, q, op, "gk", "q");
    const Shape scalar{d.B, d.T, d.H}, vector{d.B, d.T, d.H, d.Dk};
    LINEA_CHECK(gk.dtype() == DType::kF32 && (gk.shape() == scalar || gk.shape() == vector))
        << op << ": gk " << describe(gk) << " must be f32 [B, T, H] (scalar decay) or f32 "
        << "[B, T, H, Dk] (vector decay) on CUDA";
  }
  if (initial_state.defined()) {
    check_cuda(initial_state, op, "initial_state");
    const Shape state{d.B, d.H, d.Dk, d.Dv};
    LINEA_CHECK(initial_state.dtype() == DType::kF32 && initial_state.shape() == state)
        << op << ": initial_state " << describe(initial_state) << " must be f32 [B, H, Dk, Dv]";
  }
  return d;
}

void check_out(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  check_float(t, op, name);
  LINEA_CHECK(t.shape() == shape) << op << ": " << name << " " << describe(t) << " must be "
                                  << shape_str(shape);
}

void check_state_out(const Tensor& t, const Dims& d, const char* op, const char* name) {
  if (!t.defined()) return;
  check_cuda(t, op, name);
  const Shape state{d.B, d.H, d.Dk, d.Dv};
  LINEA_CHECK(t.dtype() == DType::kF32 && t.shape() == state)
      << op << ": " << name << " " << describe(t) << " must be f32 [B, H, Dk, Dv]";
}

ChunkScanArgs scan_args(const Dims& d, int dqk, int dv, const Tensor& q, const Tensor& k,
                        const Tensor& v, Tensor* out, const Tensor& gk) {
  ChunkScanArgs a;
  a.q = q.defined() ? ptr<bf16>(q) : nullptr, a.k = ptr<bf16>(k), a.v = ptr<bf16>(v);
  a.out = out ? out->raw() : nullptr, a.out_f32 = out && out->dtype() == DType::kF32;
  a.B = d.B, a.T = d.T, a.H = d.H, a.Dqk = dqk, a.Dv = dv;
  a.g = gk.defined() ? gk.data<float>() : nullptr;
  return a;
}

void run_scan(ChunkScanArgs a, Device device) {
  OnDevice dev(device.index);
  const size_t ws = chunk_scan_workspace_bytes(a);
  Tensor workspace;
  if (ws > 0) {
    workspace = Tensor::empty({static_cast<int64_t>(ws / sizeof(float))}, DType::kF32, device);
    a.workspace = workspace.data<float>();
  }
  chunk_scan(a, dev.stream);
}

// out[b, h, i, j] = s[b, h, i, j] exp(ak[b, h, (i)] + av[b, h, j]); in place allowed.
__global__ void apply_transition_kernel(const float* ak, bool scalar_k, const float* av,
                                        const float* s, int64_t n, int Dk, int Dv, float* out) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += stride) {
    const int j = static_cast<int>(idx % Dv);
    const int64_t bhi = idx / Dv, bh = bhi / Dk;
    const float f = (ak ? ak[scalar_k ? bh : bhi] : 0.0f) + (av ? av[bh * Dv + j] : 0.0f);
    out[idx] = s[idx] * expf(f);
  }
}

// log_decay = sum over time of g ([B, T, H(, D)] -> [B, H(, D)]), written when defined.
void segment_log_decay(const Tensor& g, Tensor& log_decay, const char* op, const char* gate,
                       const char* name) {
  if (!log_decay.defined()) return;
  LINEA_CHECK(g.defined()) << op << ": " << name << " given but " << gate
                           << " is undefined (that side does not decay)";
  check_dtype(g, DType::kF32, op, gate);
  LINEA_CHECK(g.ndim() == 3 || g.ndim() == 4)
      << op << ": " << gate << " " << describe(g) << " must be [B, T, H] or [B, T, H, D]";
  Shape want{g.dim(0), g.dim(2)};
  if (g.ndim() == 4) want.push_back(g.dim(3));
  check_dtype(log_decay, DType::kF32, op, name);
  check_same_device(log_decay, g, op, name, gate);
  LINEA_CHECK(log_decay.shape() == want)
      << op << ": " << name << " " << describe(log_decay) << " must be " << shape_str(want);
  OnDevice dev(g);
  const int64_t width = g.numel() / std::max<int64_t>(1, g.dim(0) * g.dim(1));
  column_sums<float>(g.data<float>(), static_cast<int>(g.dim(0)), g.dim(1), static_cast<int>(width),
                     log_decay.data<float>(), false, dev);
}

// ---- key widths the chunk scan does not take (basic linear attention's wide feature maps) -----
// Without gates, o_t = sum_(s <= t) (q_t . k_s) v_s splits into a sum over blocks of key columns,
// and so do the state (its rows), dq and dk (their columns): a Dk outside {64, 128} runs as blocks
// of 128 columns, the last one 64 or 128 wide with zero columns past Dk (which add nothing), each
// block one scan; o and dv sum the blocks' results in f32.
struct KeyBlock {
  int c0, real, width;
};

std::vector<KeyBlock> key_blocks(int Dk) {
  std::vector<KeyBlock> out;
  int c0 = 0;
  while (Dk - c0 > 128) out.push_back({c0, 128, 128}), c0 += 128;
  out.push_back({c0, Dk - c0, Dk - c0 <= 64 ? 64 : 128});
  return out;
}

bool needs_key_blocks(const Dims& d, const Tensor& gk, const Tensor& gv) {
  return !gk.defined() && !gv.defined() && d.Dk != 64 && d.Dk != 128;
}

// Elements [src_off, src_off + n) of each of `rows` rows of `src` (src_row elements a row) to
// [dst_off, dst_off + n) of the rows of `dst` (dst_row elements a row): one pitched copy.
void copy_row_parts(Tensor& dst, int64_t dst_row, int64_t dst_off, const Tensor& src,
                    int64_t src_row, int64_t src_off, int64_t n, int64_t rows) {
  if (n == 0 || rows == 0) return;
  const size_t es = dtype_size(src.dtype());
  OnDevice dev(src);
  CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(dst.raw()) + dst_off * es, dst_row * es,
                               static_cast<const char*>(src.raw()) + src_off * es, src_row * es,
                               n * es, rows, cudaMemcpyDeviceToDevice, dev.stream));
}

// The block's columns of q or k [B, T, H, Dk] as a zero-padded [B, T, H, width].
Tensor key_columns(const Tensor& t, const Dims& d, const KeyBlock& b) {
  Tensor out = b.real < b.width ? Tensor::zeros({d.B, d.T, d.H, b.width}, t.dtype(), t.device())
                                : Tensor::empty({d.B, d.T, d.H, b.width}, t.dtype(), t.device());
  copy_row_parts(out, b.width, 0, t, d.Dk, b.c0, b.real, int64_t(d.B) * d.T * d.H);
  return out;
}

// The block's rows of a state [B, H, Dk, Dv] as a zero-padded [B, H, width, Dv] (undefined stays
// undefined).
Tensor state_rows(const Tensor& s, const Dims& d, const KeyBlock& b) {
  if (!s.defined()) return Tensor();
  Tensor out = b.real < b.width ? Tensor::zeros({d.B, d.H, b.width, d.Dv}, s.dtype(), s.device())
                                : Tensor::empty({d.B, d.H, b.width, d.Dv}, s.dtype(), s.device());
  copy_row_parts(out, int64_t(b.width) * d.Dv, 0, s, int64_t(d.Dk) * d.Dv, int64_t(b.c0) * d.Dv,
                 int64_t(b.real) * d.Dv, int64_t(d.B) * d.H);
  return out;
}

void blocked_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Dims& d, double scale,
                     int64_t chunk, const Tensor& initial_state, Tensor& o, Tensor& final_state) {
  // o undefined: only the final state (each block's rows of it).
  Tensor acc;
  if (o.defined())
    acc = o.dtype() == DType::kF32 ? o : Tensor::empty(o.shape(), DType::kF32, o.device());
  const std::vector<KeyBlock> blocks = key_blocks(d.Dk);
  for (size_t i = 0; i < blocks.size(); ++i) {
    const KeyBlock& b = blocks[i];
    Tensor ob = !o.defined() ? Tensor()
                : i == 0     ? acc
                             : Tensor::empty(o.shape(), DType::kF32, o.device());
    Tensor fs = final_state.defined()
                    ? Tensor::empty({d.B, d.H, b.width, d.Dv}, DType::kF32, q.device())
                    : Tensor();
    gated_linear_attention_chunked_forward(key_columns(q, d, b), key_columns(k, d, b), v, Tensor(),
                                           Tensor(), scale, chunk, state_rows(initial_state, d, b),
                                           ob, fs);
    if (i > 0 && o.defined()) add_inplace(acc, ob);
    if (fs.defined())
      copy_row_parts(final_state, int64_t(d.Dk) * d.Dv, int64_t(b.c0) * d.Dv, fs,
                     int64_t(b.width) * d.Dv, 0, int64_t(b.real) * d.Dv, int64_t(d.B) * d.H);
  }
  if (o.defined() && acc.raw() != o.raw()) o.copy_from(acc);
}

void blocked_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Dims& d,
                      double scale, int64_t chunk, const Tensor& initial_state, const Tensor& d_o,
                      const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                      Tensor& d_initial_state) {
  Tensor acc = dv.dtype() == DType::kF32 ? dv : Tensor::empty(dv.shape(), DType::kF32, dv.device());
  const std::vector<KeyBlock> blocks = key_blocks(d.Dk);
  for (size_t i = 0; i < blocks.size(); ++i) {
    const KeyBlock& b = blocks[i];
    Tensor dvb = i == 0 ? acc : Tensor::empty(dv.shape(), DType::kF32, dv.device());
    Tensor dqb = Tensor::empty({d.B, d.T, d.H, b.width}, dq.dtype(), dq.device());
    Tensor dkb = Tensor::empty({d.B, d.T, d.H, b.width}, dk.dtype(), dk.device());
    Tensor dsi = d_initial_state.defined()
                     ? Tensor::empty({d.B, d.H, b.width, d.Dv}, DType::kF32, q.device())
                     : Tensor();
    Tensor no_dgk, no_dgv;
    gated_linear_attention_chunked_backward(key_columns(q, d, b), key_columns(k, d, b), v, Tensor(),
                                            Tensor(), scale, chunk, state_rows(initial_state, d, b),
                                            d_o, state_rows(d_final_state, d, b), dqb, dkb, dvb,
                                            no_dgk, no_dgv, dsi);
    if (i > 0) add_inplace(acc, dvb);
    const int64_t rows = int64_t(d.B) * d.T * d.H;
    copy_row_parts(dq, d.Dk, b.c0, dqb, b.width, 0, b.real, rows);
    copy_row_parts(dk, d.Dk, b.c0, dkb, b.width, 0, b.real, rows);
    if (dsi.defined())
      copy_row_parts(d_initial_state, int64_t(d.Dk) * d.Dv, int64_t(b.c0) * d.Dv, dsi,
                     int64_t(b.width) * d.Dv, 0, int64_t(b.real) * d.Dv, int64_t(d.B) * d.H);
  }
  if (acc.raw() != dv.raw()) dv.copy_from(acc);
}

}  // namespace

void gated_linear_attention_segment_log_decay(const Tensor& gk, const Tensor& gv,
                                              Tensor& log_decay_k, Tensor& log_decay_v) {
  const char* op = "gated_linear_attention_segment_log_decay (CUDA)";
  segment_log_decay(gk, log_decay_k, op, "gk", "log_decay_k");
  segment_log_decay(gv, log_decay_v, op, "gv", "log_decay_v");
}

void gated_linear_attention_apply_transition(const Tensor& log_decay_k, const Tensor& log_decay_v,
                                             const Tensor& s, Tensor& out) {
  const char* op = "gated_linear_attention_apply_transition (CUDA)";
  check_dtype(s, DType::kF32, op, "s");
  LINEA_CHECK(s.ndim() == 4) << op << ": s " << describe(s) << " must be f32 [B, H, Dk, Dv]";
  const int64_t B = s.dim(0), H = s.dim(1), Dk = s.dim(2), Dv = s.dim(3);
  const bool scalar_k = log_decay_k.defined() && log_decay_k.ndim() == 2;
  if (log_decay_k.defined()) {
    check_dtype(log_decay_k, DType::kF32, op, "log_decay_k");
    check_same_device(log_decay_k, s, op, "log_decay_k", "s");
    const Shape want = scalar_k ? Shape{B, H} : Shape{B, H, Dk};
    LINEA_CHECK(log_decay_k.shape() == want)
        << op << ": log_decay_k " << describe(log_decay_k) << " must be " << shape_str(want);
  }
  if (log_decay_v.defined()) {
    check_dtype(log_decay_v, DType::kF32, op, "log_decay_v");
    check_same_device(log_decay_v, s, op, "log_decay_v", "s");
    LINEA_CHECK(log_decay_v.shape() == (Shape{B, H, Dv}))
        << op << ": log_decay_v " << describe(log_decay_v) << " must be [B, H, Dv]";
  }
  check_dtype(out, DType::kF32, op, "out");
  check_same_device(out, s, op, "out", "s");
  LINEA_CHECK(out.shape() == s.shape())
      << op << ": out " << describe(out) << " must be " << shape_str(s.shape());
  const int64_t n = s.numel();
  if (n == 0) return;
  OnDevice dev(s);
  apply_transition_kernel<<<grid_for(n, 256, dev.index), 256, 0, dev.stream>>>(
      log_decay_k.defined() ? log_decay_k.data<float>() : nullptr, scalar_k,
      log_decay_v.defined() ? log_decay_v.data<float>() : nullptr, s.data<float>(), n,
      static_cast<int>(Dk), static_cast<int>(Dv), out.data<float>());
  CUDA_CHECK_LAUNCH();
}

void gated_linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& gk, const Tensor& gv, double scale,
                                            int64_t chunk, const Tensor& initial_state, Tensor& o,
                                            Tensor& final_state) {
  const char* op = "gated_linear_attention_chunked_forward (CUDA)";
  const Dims d = check_args(q, k, v, gk, gv, initial_state, op);
  LINEA_CHECK(chunk > 0) << op << ": chunk = " << chunk << " must be positive";
  if (o.defined()) check_out(o, v.shape(), op, "o");
  check_state_out(final_state, d, op, "final_state");
  LINEA_CHECK(o.defined() || final_state.defined())
      << op << ": neither o nor final_state is wanted";
  if (needs_key_blocks(d, gk, gv)) {
    blocked_forward(q, k, v, d, scale, chunk, initial_state, o, final_state);
    return;
  }
  if (gv.defined()) {
    LINEA_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype() &&
                (!o.defined() || o.dtype() == q.dtype()))
        << op << ": the value-decay scan takes q, k, v, o of one dtype; got q " << describe(q)
        << ", k " << describe(k) << ", v " << describe(v) << ", o " << describe(o);
    value_decay_scan_forward(q, k, v, gv, static_cast<float>(scale), initial_state, o, final_state);
    return;
  }
  if (gk.defined() && gk.ndim() == 4) {
    LINEA_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype() &&
                (!o.defined() || o.dtype() == q.dtype()))
        << op << ": the vector-decay scan takes q, k, v, o of one dtype; got q " << describe(q)
        << ", k " << describe(k) << ", v " << describe(v) << ", o " << describe(o);
    vector_decay_scan_forward(q, k, v, gk, static_cast<float>(scale), initial_state, o,
                              final_state);
    return;
  }
  const Tensor qb = as_bf16(q), kb = as_bf16(k), vb = as_bf16(v);
  ChunkScanArgs a = scan_args(d, d.Dk, d.Dv, qb, kb, vb, o.defined() ? &o : nullptr, gk);
  a.out_scale = static_cast<float>(scale);
  a.initial_state = initial_state.defined() ? initial_state.data<float>() : nullptr;
  a.final_state = final_state.defined() ? final_state.data<float>() : nullptr;
  run_scan(a, q.device());
}

void gated_linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& gk, const Tensor& gv, double scale,
                                             int64_t chunk, const Tensor& initial_state,
                                             const Tensor& d_o, const Tensor& d_final_state,
                                             Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dgk,
                                             Tensor& dgv, Tensor& d_initial_state) {
  const char* op = "gated_linear_attention_chunked_backward (CUDA)";
  const Dims d = check_args(q, k, v, gk, gv, initial_state, op);
  LINEA_CHECK(chunk > 0) << op << ": chunk = " << chunk << " must be positive";
  if (dgv.defined()) {
    LINEA_CHECK(gv.defined()) << op << ": dgv asked for without a value-side gate gv";
    check_cuda(dgv, op, "dgv");
    LINEA_CHECK(dgv.dtype() == DType::kF32 && dgv.shape() == gv.shape())
        << op << ": dgv " << describe(dgv) << " must be f32 " << shape_str(gv.shape());
  }
  check_out(d_o, v.shape(), op, "d_o");
  check_out(dq, q.shape(), op, "dq");
  check_out(dk, k.shape(), op, "dk");
  check_out(dv, v.shape(), op, "dv");
  check_state_out(d_final_state, d, op, "d_final_state");
  check_state_out(d_initial_state, d, op, "d_initial_state");
  if (dgk.defined()) {
    LINEA_CHECK(gk.defined()) << op << ": dgk asked for without gk";
    check_cuda(dgk, op, "dgk");
    LINEA_CHECK(dgk.dtype() == DType::kF32 && dgk.shape() == gk.shape())
        << op << ": dgk " << describe(dgk) << " must be f32 " << shape_str(gk.shape());
  }
  if (needs_key_blocks(d, gk, gv)) {
    blocked_backward(q, k, v, d, scale, chunk, initial_state, d_o, d_final_state, dq, dk, dv,
                     d_initial_state);
    return;
  }
  if (gv.defined()) {
    const Tensor* same_dtype[] = {&k, &v, &d_o, &dq, &dk, &dv};
    for (const Tensor* t : same_dtype)
      LINEA_CHECK(t->dtype() == q.dtype())
          << op << ": the value-decay scan takes q, k, v, dO and their gradients of one dtype; "
          << "got q " << describe(q) << " and " << describe(*t);
    value_decay_scan_backward(q, k, v, gv, static_cast<float>(scale), initial_state, d_o,
                              d_final_state, dq, dk, dv, dgv, d_initial_state);
    return;
  }
  if (gk.defined() && gk.ndim() == 4) {
    const Tensor* same_dtype[] = {&k, &v, &d_o, &dq, &dk, &dv};
    for (const Tensor* t : same_dtype)
      LINEA_CHECK(t->dtype() == q.dtype())
          << op << ": the vector-decay scan takes q, k, v, dO and their gradients of one dtype; "
          << "got q " << describe(q) << " and " << describe(*t);
    vector_decay_scan_backward(q, k, v, gk, static_cast<float>(scale), initial_state, d_o,
                               d_final_state, dq, dk, dv, dgk, d_initial_state);
    return;
  }
  const Tensor qb = as_bf16(q), kb = as_bf16(k), vb = as_bf16(v), dob = as_bf16(d_o);
  const float s = static_cast<float>(scale);
  const float* s_in = initial_state.defined() ? initial_state.data<float>() : nullptr;
  const float* ds_out = d_final_state.defined() ? d_final_state.data<float>() : nullptr;
  const bool decay = gk.defined();
  // dgk sums q . dq - k . dk, terms that largely cancel: with bf16 gradients asked for, the scans
  // write f32 ones first (dgk from those), rounded into dq and dk at the end.
  const bool f32_grads = dgk.defined() && dq.dtype() == DType::kBF16;
  Tensor dq_out = f32_grads ? Tensor::empty(dq.shape(), DType::kF32, dq.device()) : dq;
  Tensor dk_out = f32_grads ? Tensor::empty(dk.shape(), DType::kF32, dk.device()) : dk;
  // dq_t = scale dO_t S_t^T: the forward scan of (dO, v, k) with the transposed state.
  ChunkScanArgs a = scan_args(d, d.Dv, d.Dk, dob, vb, kb, &dq_out, gk);
  a.out_scale = s, a.initial_state = s_in, a.initial_transposed = true;
  run_scan(a, q.device());
  // dv_t = k_t dS_t: the reversed scan of (k, q, dO) with the decay one token later; its final
  // state, one more decay exp(g_0) past the first token, is dS_in.
  a = scan_args(d, d.Dk, d.Dv, kb, qb, dob, &dv, gk);
  a.v_scale = s, a.reverse = true, a.initial_state = ds_out, a.g_shift = decay;
  a.final_state = d_initial_state.defined() ? d_initial_state.data<float>() : nullptr;
  a.final_decay = decay && a.final_state;
  run_scan(a, q.device());
  // dk_t = v_t dS_t^T: the reversed scan of (v, dO, q) with the transposed state.
  a = scan_args(d, d.Dv, d.Dk, vb, dob, qb, &dk_out, gk);
  a.v_scale = s, a.reverse = true, a.initial_state = ds_out, a.initial_transposed = true;
  a.g_shift = decay;
  run_scan(a, q.device());
  if (!dgk.defined()) return;
  LINEA_CHECK(dq_out.dtype() == dk_out.dtype())
      << op << ": dq " << describe(dq) << " and dk " << describe(dk) << " must share a dtype";
  // dgk needs <dS_out, S_out>: S_out again, from a state-only scan.
  Tensor s_out;
  if (ds_out) {
    s_out = Tensor::empty({d.B, d.H, d.Dk, d.Dv}, DType::kF32, q.device());
    a = scan_args(d, d.Dk, d.Dv, Tensor(), kb, vb, nullptr, gk);
    a.initial_state = s_in, a.final_state = s_out.data<float>();
    run_scan(a, q.device());
  }
  OnDevice dev(q);
  chunk_scan_decay_grad(ptr<bf16>(qb), ptr<bf16>(kb), dq_out.raw(), dk_out.raw(),
                        dq_out.dtype() == DType::kF32, ds_out ? s_out.data<float>() : nullptr,
                        ds_out, d.B, d.T, d.H, d.Dk, d.Dv, dgk.data<float>(), dev.stream);
  if (f32_grads) {
    dq.copy_from(dq_out);
    dk.copy_from(dk_out);
  }
}

}  // namespace linea::kernels::cuda
