#include <torch/torch.h>

#include <stdexcept>

#include "cerebra/core/config.h"
#include "cerebra/models/models.h"
#include "cerebra/models/pruning.h"
#include "cerebra/models/quant.h"
#include "cerebra/ops/activations.h"

namespace cerebra {

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

torch::Tensor Model::step(const torch::Tensor&, GenerationState&) {
  throw std::logic_error("this model cannot generate: only causal language models (task janeausten) can");
}

namespace {
// The per-layer keys of the model group (read by the spec parse, src/train/spec.cpp).
struct BackboneKeys {
  BackboneKeys() {
    register_config_keys({
        {"layers", ValueType::String, "", "hybrid sequence models: the mixer of each layer, a list or comma-separated "
         "(e.g. mamba2,mamba2,mamba2,attention); n_layers follows the list; each mixer reads its own keys; empty = "
         "the model's mixer in every layer", {}, "model"},
        {"ffn_layers", ValueType::String, "", "feed-forward kind of each layer, dense or moe, a list or comma-separated; one "
         "entry = every layer; empty = dense", {}, "model"},
        {"short_conv", ValueType::Int, "0", "kernel of a causal depthwise convolution before every mixer (Based-style "
         "short convolution; 0 = none)", {}, "model"},
    });
  }
};
BackboneKeys backbone_keys;
}  // namespace

// ---- options

std::string BackboneOptions::layer_mixer(int64_t l) const {
  if (layers.empty()) return mixer;
  return mixer_for_model(layers.at(static_cast<size_t>(l)));
}

bool BackboneOptions::layer_moe(int64_t l) const {
  if (ffn_mult <= 0 || ffn_layers.empty()) return false;
  const std::string& kind = ffn_layers.size() == 1 ? ffn_layers[0] : ffn_layers.at(static_cast<size_t>(l));
  return kind == "moe";
}

MixerOptions BackboneOptions::layer_options(int64_t l) const {
  const std::string name = layer_mixer(l);
  if (name == mixer) return mixer_options;
  MixerOptions o = mixer_options;
  auto it = layer_own.find(name);
  o.own = it != layer_own.end() ? it->second : std::any();
  return o;
}

// ---- short causal convolution

ShortConvImpl::ShortConvImpl(int64_t d_model, int64_t kernel) : d_(d_model), kernel_(kernel) {
  TORCH_CHECK(kernel >= 1, "short_conv: kernel must be >= 1, got ", kernel);
  conv = register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(d_model, d_model, kernel).groups(d_model)));
}

torch::Tensor ShortConvImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  auto h = mask.defined() ? x * mask.unsqueeze(-1).to(x.scalar_type()) : x;
  h = torch::constant_pad_nd(h.transpose(1, 2), {kernel_ - 1, 0});  // (B, d, k-1+n): zeros before the start
  return conv->forward(h).transpose(1, 2);
}

BackboneImpl::BackboneImpl(const BackboneOptions& options) : options_(options) {
  const int64_t d = options.mixer_options.d_model;
  const int64_t L = options.layer_count();
  TORCH_CHECK(L >= 1, "backbone: n_layers must be >= 1, got ", L);
  TORCH_CHECK(options.ffn_mult >= 0, "backbone: ffn_mult must be >= 0, got ", options.ffn_mult);
  TORCH_CHECK(options.short_conv >= 0, "backbone: short_conv must be >= 0, got ", options.short_conv);
  TORCH_CHECK(options.ffn_layers.size() <= 1 || static_cast<int64_t>(options.ffn_layers.size()) == L,
              "backbone: ffn_layers lists ", options.ffn_layers.size(), " kinds for ", L,
              " layers; give one per layer or one for all");
  for (const auto& k : options.ffn_layers)
    TORCH_CHECK(k == "dense" || k == "moe", "backbone: unknown feed-forward kind '", k, "'; expected dense or moe");
  options_.n_layers = L;
  for (int64_t l = 0; l < L; ++l) {
    const std::string s = std::to_string(l);
    const std::string name = options.layer_mixer(l);
    auto mixer = make_mixer(name, options.layer_options(l));
    if (options.mixer_options.causal && !mixer->is_causal())
      throw std::invalid_argument("backbone: layer " + s + "'s mixer '" + name + "' is not causal but the model "
                                  "must be");
    mixers_.push_back(register_module("mixer" + s, mixer));
    norm1_.push_back(register_module("norm1_" + s, torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}))));
    if (options.short_conv > 0) conv_.push_back(register_module("conv" + s, ShortConv(d, options.short_conv)));
    if (options.ffn_mult > 0) {
      norm2_.push_back(register_module("norm2_" + s, torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}))));
      if (options.layer_moe(l)) {
        moe_.push_back(register_module("moe" + s, MoeFeedForward(d, options.ffn_mult * d, options.moe)));
        ffn_in_.emplace_back(nullptr);
        ffn_out_.emplace_back(nullptr);
      } else {
        moe_.emplace_back(nullptr);
        ffn_in_.push_back(register_module("ffn_in" + s, torch::nn::Linear(d, options.ffn_mult * d)));
        ffn_out_.push_back(register_module("ffn_out" + s, torch::nn::Linear(options.ffn_mult * d, d)));
      }
    } else {
      moe_.emplace_back(nullptr);
    }
  }
  final_norm_ = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
  drop_ = register_module("drop", torch::nn::Dropout(options.dropout));
  for (int64_t l = 0; l < options.n_layers; ++l) tell_feedforward_flops(l);
}

// The mixer of layer l learns what its block's feed-forward costs per token (for a mixer that routes it).
void BackboneImpl::tell_feedforward_flops(int64_t l) {
  const double d = static_cast<double>(options_.mixer_options.d_model);
  const bool moe = options_.ffn_mult > 0 && moe_.at(static_cast<size_t>(l));  // experts are routed by their own router
  mixers_.at(static_cast<size_t>(l))->set_feedforward_flops(moe ? 0.0 : 4.0 * d * static_cast<double>(ffn_units(l)));
}

torch::Tensor ShortConvImpl::step(const torch::Tensor& x, torch::Tensor& buffer) {
  if (!buffer.defined()) buffer = torch::zeros({x.size(0), kernel_ - 1, d_}, x.options());
  auto h = torch::cat({buffer, x}, 1);  // (B, k-1+m, d): the k-1 inputs before the chunk, then the chunk
  buffer = h.slice(1, h.size(1) - (kernel_ - 1)).clone();
  return conv->forward(h.transpose(1, 2)).transpose(1, 2);
}

// ---- backbone

int64_t GenerationState::bytes() const {
  int64_t b = 0;
  for (const auto& m : mixers) b += m.bytes();
  for (const auto& c : conv)
    if (c.defined()) b += c.numel() * static_cast<int64_t>(c.element_size());
  return b;
}

torch::Tensor BackboneImpl::forward(torch::Tensor x, const torch::Tensor& mask) { return run(std::move(x), mask, nullptr); }

torch::Tensor BackboneImpl::step(torch::Tensor x, GenerationState& state) {
  TORCH_CHECK(options_.mixer_options.causal, "backbone: step needs a causal model");
  state.mixers.resize(mixers_.size());
  state.conv.resize(mixers_.size());
  auto y = run(std::move(x), torch::Tensor(), &state);
  state.position += y.size(1);
  return y;
}

torch::Tensor BackboneImpl::run(torch::Tensor x, const torch::Tensor& mask, GenerationState* state) {
  for (size_t l = 0; l < mixers_.size(); ++l) {
    auto h = norm1_[l]->forward(x);
    if (!conv_.empty()) h = state ? conv_[l]->step(h, state->conv[l]) : conv_[l]->forward(h, mask);
    x = x + drop_->forward(state ? mixers_[l]->step(h, state->mixers[l]) : mixers_[l]->forward(h, mask));
    if (options_.ffn_mult <= 0) continue;
    if (moe_[l]) {
      x = x + drop_->forward(moe_[l]->forward(norm2_[l]->forward(x), mask));
      continue;
    }
    auto ffn = [&](const torch::Tensor& t) {
      return cerebra::linear(ffn_out_[l], ops::gelu(cerebra::linear(ffn_in_[l], norm2_[l]->forward(t))));
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
  for (const auto& c : conv_) f += c->flops(n);
  for (int64_t l = 0; l < n_layers(); ++l) {
    if (options_.ffn_mult > 0 && moe_[static_cast<size_t>(l)])
      f += moe_[static_cast<size_t>(l)]->flops(n);
    else if (!mixers_[static_cast<size_t>(l)]->owns_feedforward())  // else counted by the mixer that routes it
      f += 2.0 * (2.0 * n * d * static_cast<double>(ffn_units(l)));  // in and out; ffn_mult·d units until pruned
  }
  return f;
}

bool BackboneImpl::has_moe() const {
  for (const auto& m : moe_)
    if (m) return true;
  return false;
}

double BackboneImpl::moe_dropped_flops() const {
  double f = 0;
  for (const auto& m : moe_)
    if (m) f += static_cast<double>(m->last_dropped()) * m->expert_flops_per_token();
  return f;
}

torch::Tensor BackboneImpl::aux_loss() const {
  torch::Tensor sum;
  for (const auto& m : moe_) {
    if (!m) continue;
    auto a = m->aux_loss();
    if (a.defined()) sum = sum.defined() ? sum + a : a;
  }
  return sum;
}

// ---- structured pruning of the feed-forward hidden units

void BackboneImpl::check_dense_ffn(int64_t l, const char* what) const {
  TORCH_CHECK(options_.ffn_mult > 0, "backbone: no feed-forward block to ", what);
  TORCH_CHECK(!moe_.at(static_cast<size_t>(l)), "backbone: layer ", l, "'s feed-forward is a mixture of experts; ",
              "pruning moe experts is not supported (moe layers have no ffn units to ", what, ")");
}

int64_t BackboneImpl::ffn_units(int64_t l) const {
  if (options_.ffn_mult <= 0 || moe_.at(static_cast<size_t>(l))) return 0;
  return ffn_in_.at(static_cast<size_t>(l))->weight.size(0);
}

double BackboneImpl::ffn_unit_flops(int64_t n) const {
  return 4.0 * static_cast<double>(n) * static_cast<double>(options_.mixer_options.d_model);
}

torch::Tensor BackboneImpl::ffn_taylor(int64_t l) const {
  check_dense_ffn(l, "score");
  const auto& fi = ffn_in_.at(static_cast<size_t>(l));
  const auto& fo = ffn_out_.at(static_cast<size_t>(l));
  return grad_times_weight(fi->weight).sum(1) + grad_times_weight(fi->bias) + grad_times_weight(fo->weight).sum(0);
}

void BackboneImpl::prune_ffn(int64_t l, const std::vector<int64_t>& keep) {
  check_dense_ffn(l, "prune");
  const auto i = static_cast<size_t>(l);
  const std::string s = std::to_string(l);
  auto idx = index_tensor(keep);
  ffn_in_.at(i) = torch::nn::Linear(replace_module("ffn_in" + s, select_linear(ffn_in_[i], idx, {})));
  ffn_out_.at(i) = torch::nn::Linear(replace_module("ffn_out" + s, select_linear(ffn_out_[i], {}, idx)));
  tell_feedforward_flops(l);
}

void BackboneImpl::mask_ffn(int64_t l, const std::vector<int64_t>& keep) {
  check_dense_ffn(l, "mask");
  const auto i = static_cast<size_t>(l);
  torch::NoGradGuard g;
  auto drop = torch::ones({ffn_units(l)}, torch::kBool);
  drop.index_fill_(0, index_tensor(keep), false);
  ffn_in_[i]->weight.index_fill_(0, drop.nonzero().view({-1}), 0.0);
  ffn_in_[i]->bias.masked_fill_(drop, 0.0);
  ffn_out_[i]->weight.index_fill_(1, drop.nonzero().view({-1}), 0.0);
}

}  // namespace cerebra
