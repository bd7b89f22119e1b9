// CUDA basic linear attention (kernels/linear_attention.h), chunked forward and backward through
// the chunk scan (kernels/cuda/chunk_scan.h): one scan forward, three backward (dq forward in time;
// dk and dv, with dS_in, reversed). What differs from the CPU contract:
//  - q, k, v, dO enter the tensor cores in bf16 (f32 inputs are rounded to bf16 copies first);
//    o, dq, dk, dv are written in their own dtype (f32 or bf16); states are f32;
//  - the chunk is always 64 tokens (the result does not depend on it) and T need not divide;
//  - Dk in {64, 128}, Dv a multiple of 64 (and the same for the backward's transposed scans).
// Runs on the current stream of the tensors' device; the segments' workspace comes from the
// caching allocator.
#include "kernels/cuda/chunk_scan.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {
namespace {

// bf16 view of t: t itself, or a bf16 copy of an f32 tensor.
Tensor as_bf16(const Tensor& t) { return t.dtype() == DType::kBF16 ? t : t.to(DType::kBF16); }

const __nv_bfloat16* bf16_ptr(const Tensor& t) {
  return reinterpret_cast<const __nv_bfloat16*>(t.data<BF16>());
}

struct Dims {
  int B, T, H, Dk, Dv;
};

Dims check_args(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& initial_state,
                const char* op) {
  check_float(q, op, "q");
  check_float(k, op, "k");
  check_float(v, op, "v");
  LINEA_CHECK(q.ndim() == 4 && k.shape() == q.shape() && v.ndim() == 4 && v.dim(0) == q.dim(0) &&
              v.dim(1) == q.dim(1) && v.dim(2) == q.dim(2))
      << op << ": q " << describe(q) << ", k " << describe(k) << ", v " << describe(v)
      << " must be [B, T, H, Dk], [B, T, H, Dk], [B, T, H, Dv]";
  const Dims d{int(q.dim(0)), int(q.dim(1)), int(q.dim(2)), int(q.dim(3)), int(v.dim(3))};
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
                        const Tensor& v, Tensor& out) {
  ChunkScanArgs a;
  a.q = bf16_ptr(q), a.k = bf16_ptr(k), a.v = bf16_ptr(v);
  a.out = out.raw(), a.out_f32 = out.dtype() == DType::kF32;
  a.B = d.B, a.T = d.T, a.H = d.H, a.Dqk = dqk, a.Dv = dv;
  return a;
}

// Runs one scan with a workspace from the caching allocator when it needs one.
void run_scan(ChunkScanArgs a, Device device) {
  OnDevice dev(device.index);
  const size_t ws = chunk_scan_workspace_bytes(a);
  Tensor workspace;
  if (ws > 0) {
    workspace = Tensor::empty({static_cast<int64_t>(ws / sizeof(float))}, DType::kF32, device);
    a.workspace = workspace.data<float>();
  }
  chunk_scan(a, dev.stream);
  // The workspace goes back to the allocator here; its blocks are reused in stream order.
}

}  // namespace

void linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      double scale, int64_t chunk, const Tensor& initial_state,
                                      Tensor& o, Tensor& final_state) {
  const char* op = "linear_attention_chunked_forward (CUDA)";
  const Dims d = check_args(q, k, v, initial_state, op);
  LINEA_CHECK(chunk > 0) << op << ": chunk = " << chunk << " must be positive";
  check_out(o, v.shape(), op, "o");
  check_state_out(final_state, d, op, "final_state");
  const Tensor qb = as_bf16(q), kb = as_bf16(k), vb = as_bf16(v);
  ChunkScanArgs a = scan_args(d, d.Dk, d.Dv, qb, kb, vb, o);
  a.out_scale = static_cast<float>(scale);
  a.initial_state = initial_state.defined() ? initial_state.data<float>() : nullptr;
  a.final_state = final_state.defined() ? final_state.data<float>() : nullptr;
  run_scan(a, q.device());
}

void linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t chunk, const Tensor& initial_state,
                                       const Tensor& d_o, const Tensor& d_final_state, Tensor& dq,
                                       Tensor& dk, Tensor& dv, Tensor& d_initial_state) {
  const char* op = "linear_attention_chunked_backward (CUDA)";
  const Dims d = check_args(q, k, v, initial_state, op);
  LINEA_CHECK(chunk > 0) << op << ": chunk = " << chunk << " must be positive";
  check_out(const_cast<Tensor&>(d_o), v.shape(), op, "d_o");
  check_out(dq, q.shape(), op, "dq");
  check_out(dk, k.shape(), op, "dk");
  check_out(dv, v.shape(), op, "dv");
  check_state_out(d_final_state, d, op, "d_final_state");
  check_state_out(d_initial_state, d, op, "d_initial_state");
  const Tensor qb = as_bf16(q), kb = as_bf16(k), vb = as_bf16(v), dob = as_bf16(d_o);
  const float s = static_cast<float>(scale);
  const float* s_in = initial_state.defined() ? initial_state.data<float>() : nullptr;
  const float* ds_out = d_final_state.defined() ? d_final_state.data<float>() : nullptr;
  // dq_t = scale dO_t S_t^T: the forward scan of (dO, v, k) with the transposed state.
  ChunkScanArgs a = scan_args(d, d.Dv, d.Dk, dob, vb, kb, dq);
  a.out_scale = s, a.initial_state = s_in, a.initial_transposed = true;
  run_scan(a, q.device());
  // dv_t = k_t dS_t, dS_t = dS_out + scale sum_{s >= t} q_s^T dO_s: reversed scan of (k, q, dO);
  // its final state is dS_in.
  a = scan_args(d, d.Dk, d.Dv, kb, qb, dob, dv);
  a.v_scale = s, a.reverse = true, a.initial_state = ds_out;
  a.final_state = d_initial_state.defined() ? d_initial_state.data<float>() : nullptr;
  run_scan(a, q.device());
  // dk_t = v_t dS_t^T: reversed scan of (v, dO, q) with the transposed state.
  a = scan_args(d, d.Dv, d.Dk, vb, dob, qb, dk);
  a.v_scale = s, a.reverse = true, a.initial_state = ds_out, a.initial_transposed = true;
  run_scan(a, q.device());
}

}  // namespace linea::kernels::cuda
