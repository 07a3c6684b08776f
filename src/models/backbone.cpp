#include <torch/torch.h>

#include "cerebra/models/models.h"
#include "cerebra/models/pruning.h"
#include "cerebra/models/quant.h"

namespace cerebra {

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

BackboneImpl::BackboneImpl(const BackboneOptions& options) : options_(options) {
  const int64_t d = options.mixer_options.d_model;
  TORCH_CHECK(options.n_layers >= 1, "backbone: n_layers must be >= 1, got ", options.n_layers);
  TORCH_CHECK(options.ffn_mult >= 0, "backbone: ffn_mult must be >= 0, got ", options.ffn_mult);
  for (int64_t l = 0; l < options.n_layers; ++l) {
    const std::string s = std::to_string(l);
    mixers_.push_back(register_module("mixer" + s, make_mixer(options.mixer, options.mixer_options)));
    norm1_.push_back(register_module("norm1_" + s, torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}))));
    if (options.ffn_mult > 0) {
      norm2_.push_back(register_module("norm2_" + s, torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}))));
      ffn_in_.push_back(register_module("ffn_in" + s, torch::nn::Linear(d, options.ffn_mult * d)));
      ffn_out_.push_back(register_module("ffn_out" + s, torch::nn::Linear(options.ffn_mult * d, d)));
    }
  }
  final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  drop_ = register_module("drop", torch::nn::Dropout(options.dropout));
  for (int64_t l = 0; l < options.n_layers; ++l) tell_feedforward_flops(l);
}

// The mixer of layer l learns what its block's feed-forward costs per token (for a mixer that routes it).
void BackboneImpl::tell_feedforward_flops(int64_t l) {
  const double d = static_cast<double>(options_.mixer_options.d_model);
  mixers_.at(static_cast<size_t>(l))->set_feedforward_flops(4.0 * d * static_cast<double>(ffn_units(l)));
}

torch::Tensor BackboneImpl::forward(torch::Tensor x, const torch::Tensor& mask) {
  for (size_t l = 0; l < mixers_.size(); ++l) {
    x = x + drop_->forward(mixers_[l]->forward(norm1_[l]->forward(x), mask));
    if (options_.ffn_mult <= 0) continue;
    auto ffn = [&](const torch::Tensor& h) {
      return cerebra::linear(ffn_out_[l], torch::gelu(cerebra::linear(ffn_in_[l], norm2_[l]->forward(h))));
    };
    const torch::Tensor tokens = mixers_[l]->feedforward_tokens();
    if (!tokens.defined()) {
      x = x + drop_->forward(ffn(x));
      continue;
    }
    // The mixer routed: the feed-forward runs on its selected tokens only (packed), scaled by their factor.
    auto idx = tokens.nonzero();
    if (idx.size(0) == 0) continue;
    auto bi = idx.select(1, 0), ii = idx.select(1, 1);
    auto xs = x.index({bi, ii});
    auto f = drop_->forward(ffn(xs)) * mixers_[l]->feedforward_scale().index({bi, ii}).unsqueeze(-1);
    x = x.index_put({bi, ii}, xs + f);
  }
  return final_norm_->forward(x);
}

double BackboneImpl::flops(int64_t n) const {
  const double d = static_cast<double>(options_.mixer_options.d_model);
  double f = 0;
  for (const auto& m : mixers_) f += m->flops(n);
  for (int64_t l = 0; l < n_layers(); ++l)  // in and out; ffn_units(l) = ffn_mult·d until pruned
    if (!mixers_[static_cast<size_t>(l)]->owns_feedforward())  // else counted by the mixer that routes it
      f += 2.0 * (2.0 * n * d * static_cast<double>(ffn_units(l)));
  return f;
}

// ---- structured pruning of the feed-forward hidden units

int64_t BackboneImpl::ffn_units(int64_t l) const {
  if (options_.ffn_mult <= 0) return 0;
  return ffn_in_.at(static_cast<size_t>(l))->weight.size(0);
}

double BackboneImpl::ffn_unit_flops(int64_t n) const {
  return 4.0 * static_cast<double>(n) * static_cast<double>(options_.mixer_options.d_model);
}

torch::Tensor BackboneImpl::ffn_taylor(int64_t l) const {
  TORCH_CHECK(options_.ffn_mult > 0, "backbone: no feed-forward block to score");
  const auto& fi = ffn_in_.at(static_cast<size_t>(l));
  const auto& fo = ffn_out_.at(static_cast<size_t>(l));
  return grad_times_weight(fi->weight).sum(1) + grad_times_weight(fi->bias) + grad_times_weight(fo->weight).sum(0);
}

void BackboneImpl::prune_ffn(int64_t l, const std::vector<int64_t>& keep) {
  TORCH_CHECK(options_.ffn_mult > 0, "backbone: no feed-forward block to prune");
  const auto i = static_cast<size_t>(l);
  const std::string s = std::to_string(l);
  auto idx = index_tensor(keep);
  ffn_in_.at(i) = torch::nn::Linear(replace_module("ffn_in" + s, select_linear(ffn_in_[i], idx, {})));
  ffn_out_.at(i) = torch::nn::Linear(replace_module("ffn_out" + s, select_linear(ffn_out_[i], {}, idx)));
  tell_feedforward_flops(l);
}

void BackboneImpl::mask_ffn(int64_t l, const std::vector<int64_t>& keep) {
  TORCH_CHECK(options_.ffn_mult > 0, "backbone: no feed-forward block to mask");
  const auto i = static_cast<size_t>(l);
  torch::NoGradGuard g;
  auto drop = torch::ones({ffn_units(l)}, torch::kBool);
  drop.index_fill_(0, index_tensor(keep), false);
  ffn_in_[i]->weight.index_fill_(0, drop.nonzero().view({-1}), 0.0);
  ffn_in_[i]->bias.masked_fill_(drop, 0.0);
  ffn_out_[i]->weight.index_fill_(1, drop.nonzero().view({-1}), 0.0);
}

}  // namespace cerebra
