// The CUDA fast paths behind the public kernels (kernels/*.h): same names and contracts, chosen
// by the CPU entry points when their tensors live on a GPU (LINEA_ON_CUDA in
// kernels/cpu/dispatch.h). What differs on CUDA, for every op:
//  - storage dtypes are f32 and bf16 (no f64); arithmetic is f32;
//  - saved statistics (rmsnorm's rstd, cross-entropy's lse) are f32 whatever the input dtype;
//  - parameter gradients that are sums over rows (rmsnorm dw, embedding dtable) are f32, and
//    linear/gemm may write an f32 C from bf16 operands (f32 gradients of bf16 weights);
//  - work is queued on the current stream of the tensors' device; functions that return a host
//    value (cross_entropy_forward, sum_squares, all_finite) wait for it.
// Built only with LINEA_CUDA; declared without CUDA types so that CPU sources may include it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor/tensor.h"
#include "kernels/adamw.h"
#include "kernels/feature_map.h"
#include "kernels/gates.h"
#include "kernels/quadratic_feature_map.h"
#include "kernels/rope.h"
#include "kernels/softmax_attention.h"

namespace linea::kernels::cuda {

// kernels/matmul.h (cuBLAS; bf16 operands with f32 accumulation, f32 operands in full f32).
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, double alpha,
          double beta);
void linear_forward(const Tensor& x, const Tensor& w, Tensor& y);
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor& dx, Tensor& dw);

// kernels/grouped_gemm.h (cublasGemmGroupedBatchedEx for y and dx, cublasGemmEx per group for
// the f32 dw; LINEA_GROUPED_GEMM=loop: cublasGemmEx per group throughout).
void grouped_linear_forward(const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts,
                            Tensor& y);
void grouped_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy,
                             const std::vector<int64_t>& counts, Tensor& dx,
                             const std::vector<Tensor>& dw);

// kernels/embedding.h (dtable f32; each id's rows summed in position order: deterministic).
void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y);
void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable);

// kernels/rmsnorm.h
void rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd);
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                      Tensor& dx, Tensor& dw);

// kernels/l2norm.h (the weightless row norm with a sum; rstd f32)
void l2norm_forward(const Tensor& x, double eps, Tensor& y, Tensor& rstd);
void l2norm_backward(const Tensor& x, const Tensor& rstd, const Tensor& dy, Tensor& dx);

// kernels/feature_map.h
void feature_map_forward(FeatureMap f, const Tensor& x, Tensor& y);
void feature_map_backward(FeatureMap f, const Tensor& x, const Tensor& dy, Tensor& dx);

// kernels/hedgehog_feature_map.h (one block per row and head; dw f32 or the dtype of w, its sum
// over rows f64 in a fixed order).
void hedgehog_feature_map_forward(const Tensor& x, const Tensor& w, Tensor& y);
void hedgehog_feature_map_backward(const Tensor& x, const Tensor& w, const Tensor& y,
                                   const Tensor& dy, Tensor& dx, Tensor& dw);

// kernels/quadratic_feature_map.h (element-wise forward, one thread per input feature backward).
void quadratic_feature_map_forward(const QuadraticFeatureMap& f, const Tensor& x, Tensor& y);
void quadratic_feature_map_backward(const QuadraticFeatureMap& f, const Tensor& x, const Tensor& dy,
                                    Tensor& dx);

// kernels/layernorm.h (one warp per row; mean, rstd, gamma, beta and their gradients f32).
void layernorm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                       Tensor& y, Tensor& mean, Tensor& rstd);
void layernorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& rstd, const Tensor& dy, Tensor& dx, Tensor& dgamma,
                        Tensor& dbeta);

// kernels/gates.h (kernels/cuda/gates.cu): element-wise in f32, one dtype a call (f32 or bf16);
// delta_log_decay_backward's dA_log and d_dt_bias are f32 row sums (f64, fixed order).
void activation_forward(Activation a, const Tensor& x, Tensor& y);
void activation_backward(Activation a, const Tensor& x, const Tensor& dy, Tensor& dx);
void output_gate_forward(Activation a, const Tensor& g, const Tensor& n, Tensor& y);
void output_gate_backward(Activation a, const Tensor& g, const Tensor& n, const Tensor& dy,
                          Tensor& dg, Tensor& dn);
void log_sigmoid_decay_forward(const Tensor& z, double normalizer, Tensor& gk);
void log_sigmoid_decay_backward(const Tensor& z, const Tensor& dgk, double normalizer, Tensor& dz);
void forget_gate_forward(const Tensor& z, double lower_bound, Tensor& gk, Tensor& k);
void forget_gate_backward(const Tensor& z, double lower_bound, const Tensor& dgk, const Tensor& dk,
                          Tensor& dz);
void softplus_forward(const Tensor& z, Tensor& y);
void softplus_backward(const Tensor& z, const Tensor& dy, Tensor& dz);
void delta_beta_forward(const Tensor& b, double scale, Tensor& beta);
void delta_beta_backward(const Tensor& b, double scale, const Tensor& dbeta, Tensor& db);
void delta_log_decay_forward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                             Tensor& g);
void delta_log_decay_backward(const Tensor& a, const Tensor& A_log, const Tensor& dt_bias,
                              const Tensor& dg, Tensor& da, Tensor& dA_log, Tensor& d_dt_bias);

// kernels/columns.h (kernels/cuda/columns.cu): add_bias takes b in y's dtype or f32;
// bias_backward's db is f32, its row sums f64 in a fixed order.
void add_bias(Tensor& y, const Tensor& b);
void bias_backward(const Tensor& dy, Tensor& db);
void gather_columns(const Tensor& t, int64_t row0, int64_t c0, Tensor& out);
void scatter_add_columns(Tensor& dst, int64_t row0, int64_t c0, const Tensor& src);

// kernels/short_conv.h (kernels/cuda/short_conv.cu): x, w, dy, dx of one dtype; dw f32 or that
// dtype, its sum over rows f64 in a fixed order; K <= 8.
void short_conv_forward(const Tensor& x, const Tensor& w, bool silu, Tensor& y);
void short_conv_backward(const Tensor& x, const Tensor& w, bool silu, const Tensor& dy, Tensor& dx,
                         Tensor& dw);

// kernels/sequence.h (pitched device copies on the current stream; any dtype, exact).
Tensor concat_time(const Tensor& a, const Tensor& b);
Tensor slice_time(const Tensor& x, int64_t begin, int64_t end);

// kernels/ssd.h (kernels/cuda/ssd.cu): activations f32 or bf16 of one dtype, A_log, D, dA_log,
// dD f32; the per-head sums over rows f64 in a fixed order.
void ssd_heads_broadcast(const Tensor& m, Tensor& out);
void ssd_heads_sum(const Tensor& d, Tensor& out);
void ssd_discretise(const Tensor& x, const Tensor& dt, const Tensor& A_log, Tensor& g, Tensor& v);
void ssd_add_skip(const Tensor& x, const Tensor& D, Tensor& o);
void ssd_discretise_backward(const Tensor& x, const Tensor& dt, const Tensor& g,
                             const Tensor& A_log, const Tensor& D, const Tensor& dv,
                             const Tensor& dg, const Tensor& d_o, Tensor& dx, Tensor& ddt,
                             Tensor& dA_log, Tensor& dD);

// kernels/gsa.h (kernels/cuda/gsa.cu): element-wise and one warp per row of slots, f32 arithmetic.
void gsa_slot_write_forward(const Tensor& log_alpha, Tensor& w);
void gsa_slot_write_backward(const Tensor& log_alpha, const Tensor& d_log_alpha, const Tensor& d_w,
                             Tensor& d_total);
void gsa_slot_softmax_forward(const Tensor& s, Tensor& p);
void gsa_slot_softmax_backward(const Tensor& p, const Tensor& dp, Tensor& ds);

// kernels/swiglu.h
void swiglu_forward(const Tensor& g, const Tensor& u, Tensor& h);
void swiglu_backward(const Tensor& g, const Tensor& u, const Tensor& dh, Tensor& dg, Tensor& du);
void swiglu_packed_forward(const Tensor& gu, Tensor& h);
void swiglu_packed_backward(const Tensor& gu, const Tensor& dh, Tensor& dgu);

// kernels/rope.h
void rope_forward(const Tensor& x, const RopeParams& p, Tensor& y);
void rope_backward(const Tensor& dy, const RopeParams& p, Tensor& dx);

// kernels/cross_entropy.h (one pass over each row, no f32 copy of bf16 logits).
double cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& lse,
                             int64_t* n_valid);
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            double dloss, int64_t n_valid, Tensor& dlogits);

// kernels/elementwise.h
void add(const Tensor& a, const Tensor& b, Tensor& out);
void add_inplace(Tensor& a, const Tensor& b);
void axpy(double alpha, const Tensor& x, Tensor& y);
void scale(Tensor& x, double alpha);
double sum_squares(const Tensor& x);
void sum_squares_into(const Tensor& x, Tensor& sums, int64_t index);
bool all_finite(const Tensor& x);

// kernels/linear_attention.h: the chunk scan (kernels/cuda/chunk_scan.h); bf16 tensor-core inputs,
// f32 states, any chunk (64 is used), Dk in {64, 128}, Dv a multiple of 64.
void linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      double scale, int64_t chunk, const Tensor& initial_state,
                                      Tensor& o, Tensor& final_state);
void linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       double scale, int64_t chunk, const Tensor& initial_state,
                                       const Tensor& d_o, const Tensor& d_final_state, Tensor& dq,
                                       Tensor& dk, Tensor& dv, Tensor& d_initial_state);

// kernels/delta_rule.h (kernels/cuda/delta_rule.cu): the chunked WY form in f32 on CUDA cores,
// chunks of 64 whatever `chunk` says, any T; q, k, v, dO and their gradients of one dtype (f32 or
// bf16), g, beta, dg, dbeta, states and transitions f32; Dk in {64, 128}, Dv a multiple of 64.
// The recurrent reference stays on the CPU.
void delta_rule_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                const Tensor& beta, double scale, int64_t chunk,
                                const Tensor& initial_state, Tensor& o, Tensor& final_state);
void delta_rule_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                 const Tensor& beta, double scale, int64_t chunk,
                                 const Tensor& initial_state, const Tensor& d_o,
                                 const Tensor& d_final_state, Tensor& dq, Tensor& dk, Tensor& dv,
                                 Tensor& dg, Tensor& dbeta, Tensor& d_initial_state);
void delta_rule_chunked_transition(const Tensor& k, const Tensor& g, const Tensor& beta,
                                   int64_t chunk, Tensor& transition);

// kernels/gated_linear_attention.h for a scalar gk [B, T, H] and no gv (Lightning, RetNet, Mamba2,
// simple GLA): the decayed chunk scan; for a vector gk [B, T, H, Dk] (GLA, HGRN2): the vector-decay
// scan (kernels/cuda/vector_decay_scan.h, bf16 tensor cores); gates, states and dgk f32; gv
// refused.
void gated_linear_attention_chunked_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& gk, const Tensor& gv, double scale,
                                            int64_t chunk, const Tensor& initial_state, Tensor& o,
                                            Tensor& final_state);
void gated_linear_attention_chunked_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& gk, const Tensor& gv, double scale,
                                             int64_t chunk, const Tensor& initial_state,
                                             const Tensor& d_o, const Tensor& d_final_state,
                                             Tensor& dq, Tensor& dk, Tensor& dv, Tensor& dgk,
                                             Tensor& dgv, Tensor& d_initial_state);

// kernels/softmax_attention.h: flash-attention-2 style tiles on tensor cores (bf16 operands, f32
// accumulation; f32 inputs rounded to bf16 copies), never the [Tq, Tk] scores; lse f32
// [B, Hq, Tq]; D = Dv in {64, 128}; backward deterministic (a dQ pass and a dK/dV pass, no
// atomics).
void softmax_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                               const CausalMask& mask, Tensor& o, Tensor& lse);
void softmax_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                                const Tensor& lse, const Tensor& d_o, double scale,
                                const CausalMask& mask, Tensor& dq, Tensor& dk, Tensor& dv);

// kernels/moe_permute.h (weights, dweights and gates f32; indices trusted: the plan built them).
void moe_permute(const Tensor& x, const Tensor& row_copy, int64_t top_k, Tensor& rows);
void moe_permute_backward(const Tensor& drows, const Tensor& copy_row, int64_t top_k, Tensor& dx);
void moe_unpermute_combine(const Tensor& rows, const Tensor& copy_row, const Tensor& weight,
                           int64_t top_k, Tensor& out);
void moe_unpermute_combine_backward(const Tensor& dy, const Tensor& rows, const Tensor& copy_row,
                                    const Tensor& weight, int64_t top_k, Tensor& drows,
                                    Tensor& dweight);
void moe_gate_add(const Tensor& logit, const Tensor& s, Tensor& gate, Tensor& y);
void moe_gate_backward(const Tensor& dy, const Tensor& s, const Tensor& gate, Tensor& ds,
                       Tensor& dlogit);
void gather_rows(const Tensor& in, const Tensor& index, Tensor& out);
void scatter_rows(const Tensor& in, const Tensor& index, Tensor& out);

// The MoE router on GPU tensors (core/modules/moe/router.h; kernels/cuda/moe_route.cu), f32
// arithmetic. Forward: logits [N, E] (f32 or bf16), bias [E] f32 (sigmoid router only) ->
// expert [N k] i32 (top-k, ties to the lower index), weight [N k] f32, score [N, E] f32 (p or s),
// prob [N, E] f32 (softmax), lse [N] f32 and stats [N k + E + 1] f64 = (the experts as numbers,
// sum_t q[t, e] per expert, sum_t lse[t]^2), the one buffer the host reads back.
void moe_route_forward(const Tensor& logits, const Tensor& bias, int64_t top_k, bool sigmoid,
                       bool normalise, double routed_scaling, Tensor& expert, Tensor& weight,
                       Tensor& score, Tensor& prob, Tensor& lse, Tensor& stats);
// dlogits [N, E] (`=`, dtype of the logits) from d(loss)/d(weight) [N k] f32, the aux gradient
// per expert aux_scale * daux[e] (d aux / d q[t, e], the same for every token) and the z-loss
// gradient dz_coeff * lse[t] * prob[t, e].
void moe_route_backward(const Tensor& dweight, const Tensor& expert, const Tensor& weight,
                        const Tensor& score, const Tensor& prob, const Tensor& lse,
                        const Tensor& daux, int64_t top_k, double aux_scale, double dz_coeff,
                        bool sigmoid, bool normalise, double routed_scaling, Tensor& dlogits);

// The segment log decay (a sum over time, f64 partials in a fixed order) and the diagonal
// transition applied to a state, all f32.
void gated_linear_attention_segment_log_decay(const Tensor& gk, const Tensor& gv,
                                              Tensor& log_decay_k, Tensor& log_decay_v);
void gated_linear_attention_apply_transition(const Tensor& log_decay_k, const Tensor& log_decay_v,
                                             const Tensor& s, Tensor& out);

// kernels/state_output.h: the exp cumulative decays in blocks of tokens, then one f32 cuBLAS GEMM
// a head; q, o, d_o f32 or bf16; gates and states f32.
void state_output_forward(const Tensor& q, const Tensor& gk, const Tensor& gv, double scale,
                          const Tensor& s, Tensor& o);
void state_output_state_grad(const Tensor& q, const Tensor& gk, const Tensor& gv, double scale,
                             const Tensor& d_o, Tensor& ds);

// kernels/adamw.h (f32 master weights and moments; gradient f32 or bf16).
void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamWStep& s);

// Random normal values N(0, stddev) generated on the device from (seed, element index): for
// benchmarks and large test inputs. f32 or bf16.
void fill_normal(Tensor& t, uint64_t seed, double stddev);

}  // namespace linea::kernels::cuda
