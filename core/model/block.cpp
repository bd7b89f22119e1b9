#include "core/model/block.h"

#include <optional>

#include "core/config/config.h"
#include "core/modules/moe/moe_layer.h"
#include "core/modules/swiglu_mlp.h"
#include "core/util/phase_times.h"
#include "kernels/elementwise.h"
#include "parallel/lasp2.h"

namespace linea {
namespace {
std::string layer_prefix(int layer) { return "layers." + std::to_string(layer); }

// With sequence parallelism, linear mixers are wrapped in LASP-2 and softmax attention switches to
// LASP-2H itself.
std::unique_ptr<TokenMixer> sequence_parallel(std::unique_ptr<TokenMixer> mixer,
                                              parallel::Communicator* sp, int layer) {
  if (!sp || sp->size() == 1) return mixer;
  if (mixer->num_states() > 0)
    return std::make_unique<parallel::Lasp2Mixer>(std::move(mixer), *sp,
                                                  layer_prefix(layer) + ".mixer");
  LINEA_USER_CHECK(mixer->enable_sequence_parallel(*sp), "set parallel.sp = 1 for this model")
      << "layer " << layer << "'s mixer does not support sequence parallelism";
  return mixer;
}
// The one switch choosing a layer's channel mixer (resolved_moe_pattern says which layers are MoE).
std::unique_ptr<ChannelMixer> make_channel_mixer(const config::Config& cfg, int layer, DType dtype,
                                                 parallel::Communicator* sp,
                                                 parallel::Communicator* ep) {
  const std::string name = layer_prefix(layer) + ".mlp";
  const int64_t hidden = cfg.model().hidden_size();
  if (resolved_moe_pattern(cfg)[layer] == 'E')
    return std::make_unique<MoeLayer>(name, hidden, cfg.model().channel_mixer().moe(), dtype, ep,
                                      sp);
  return std::make_unique<SwiGLUMLP>(name, hidden, resolved_intermediate_size(cfg), dtype);
}
}  // namespace

Block::Block(const config::Config& cfg, int layer, DType dtype, parallel::Communicator* sp,
             parallel::Communicator* ep)
    : attn_norm_(layer_prefix(layer) + ".attn_norm", cfg.model().hidden_size(),
                 cfg.model().norm_eps(), dtype),
      mixer_(sequence_parallel(make_token_mixer(cfg, layer, layer_prefix(layer) + ".mixer", dtype),
                               sp, layer)),
      mlp_norm_(layer_prefix(layer) + ".mlp_norm", cfg.model().hidden_size(),
                cfg.model().norm_eps(), dtype),
      mlp_(make_channel_mixer(cfg, layer, dtype, sp, ep)) {
  mixer_label_ = std::string(1, resolved_layer_pattern(cfg)[layer]) + " mixer";
  channel_label_ = mlp_->moe() ? "moe" : "mlp";
  const std::string& r = cfg.train().recompute();
  recompute_ = r == "full" ? Recompute::kFull
                           : (r == "selective" ? Recompute::kSelective : Recompute::kNone);
}

void Block::init(uint64_t seed, double std, double out_std) {
  mixer_->init(seed, std, out_std);
  mlp_->init(seed, std, out_std);
}

Tensor Block::mixer_half(const Tensor& x) {
  Tensor h = Tensor::empty(x.shape(), x.dtype());
  kernels::add(x, mixer_->forward(attn_norm_.forward(x)), h);
  return h;
}

Tensor Block::channel_half(const Tensor& h) {
  Tensor y = Tensor::empty(h.shape(), h.dtype());
  kernels::add(h, mlp_->forward(mlp_norm_.forward(h)), y);
  return y;
}

void Block::replay_channel_half() {
  const Phase phase(channel_label_ + " replay");
  // The replay repeats a forward the step has counted already (MoE load statistics).
  if (MoeLayer* m = mlp_->moe()) m->set_replaying(true);
  mlp_->forward(mlp_norm_.forward(saved_h_));
  if (MoeLayer* m = mlp_->moe()) m->set_replaying(false);
  saved_h_ = Tensor();
}

Tensor Block::forward(const Tensor& x) {
  std::optional<Phase> phase(std::in_place, mixer_label_ + " fwd");
  Tensor h = mixer_half(x);
  if (recompute_ == Recompute::kFull) {
    attn_norm_.release_saved();
    mixer_->release_saved();
    saved_x_ = x;
  }
  phase.emplace(channel_label_ + " fwd");
  Tensor y = channel_half(h);
  if (recompute_ != Recompute::kNone) {
    mlp_norm_.release_saved();
    mlp_->release_for_replay();
    if (recompute_ == Recompute::kSelective) saved_h_ = h;
  }
  return y;
}

Tensor Block::backward(const Tensor& dy) {
  if (recompute_ == Recompute::kFull) {
    const Phase phase(mixer_label_ + " replay");
    // Mixer statistics are not accumulated by the forward, so the mixer half replays as is.
    saved_h_ = mixer_half(saved_x_);
    saved_x_ = Tensor();
  }
  if (recompute_ != Recompute::kNone) replay_channel_half();
  // dh = dy + d(mlp branch); dx = dh + d(mixer branch)
  std::optional<Phase> phase(std::in_place, channel_label_ + " bwd");
  Tensor dh = mlp_norm_.backward(mlp_->backward(dy));
  kernels::add_inplace(dh, dy);
  phase.emplace(mixer_label_ + " bwd");
  Tensor dx = attn_norm_.backward(mixer_->backward(dh));
  kernels::add_inplace(dx, dh);
  return dx;
}

void Block::release_saved() {
  attn_norm_.release_saved();
  mixer_->release_saved();
  mlp_norm_.release_saved();
  mlp_->release_saved();
  saved_x_ = saved_h_ = Tensor();
}

void Block::collect(ParameterList& out) {
  attn_norm_.collect(out);
  mixer_->collect(out);
  mlp_norm_.collect(out);
  mlp_->collect(out);
}

}  // namespace linea
