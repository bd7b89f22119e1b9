// CUDA basic linear attention (kernels/linear_attention.h): gated linear attention without gates
// (kernels/cuda/gated_linear_attention.cu), i.e. the chunk scan (kernels/cuda/chunk_scan.h): one
// scan forward, three backward (dq forward in time; dk and dv, with dS_in, reversed). The CUDA
// rules (bf16 tensor-core inputs, f32 states, any T, Dk in {64, 128}, Dv a multiple of 64) are
// those of that file.
#include "kernels/cuda/ops.h"

namespace linea::kernels::cuda {

void linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      double scale, int64_t chunk, const Tensor& initial_state,
                                      Tensor& o, Tensor& final_state) {
  gated_linear_attention_chunked_forward(q, k, v, Tensor(), Tensor(), scale, chunk, initial_state,
                                         o, final_state);
}

void linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t chunk, const Tensor& initial_state,
                                       const Tensor& d_o, const Tensor& d_final_state, Tensor& dq,
                                       Tensor& dk, Tensor& dv, Tensor& d_initial_state) {
  Tensor no_dgk, no_dgv;
  gated_linear_attention_chunked_backward(q, k, v, Tensor(), Tensor(), scale, chunk, initial_state,
                                          d_o, d_final_state, dq, dk, dv, no_dgk, no_dgv,
                                          d_initial_state);
}

}  // namespace linea::kernels::cuda
