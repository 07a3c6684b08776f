// Models: a batch type shared by all tasks, the model interface, the sequence backbone (blocks of
// mixer + feed-forward), and the registry that builds a model by name for a task.
#pragma once

#include <any>
#include <cstdint>
#include <map>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "cerebra/core/batch.h"
#include "cerebra/models/baselines.h"
#include "cerebra/models/mixer.h"
#include "cerebra/models/moe.h"
#include "cerebra/models/text_baselines.h"

namespace cerebra {

class BackboneImpl;
struct GenerationState;

class Model : public torch::nn::Module {
 public:
  // -> (B, n_outputs)
  virtual torch::Tensor forward(const Batch& batch) = 0;
  // Analytic forward FLOPs for one example (matmul-class ops, 2 per multiply-add; see mixer.h).
  virtual double flops_per_example() const = 0;
  // The sequence mixers inside (for compute-aware objectives and statistics); empty for non-sequence models.
  virtual std::vector<std::shared_ptr<SequenceMixer>> mixers() const { return {}; }
  // Tokens each mixer sees per example (0 for non-sequence models).
  virtual int64_t tokens_per_example() const { return 0; }
  // The backbone that holds prunable structures (cerebra/pruning.h); nullptr for models without one.
  virtual BackboneImpl* backbone() { return nullptr; }
  // Causal language models: tokens (B, m) int64, the m tokens after the state.position seen -> logits (B, m, vocab),
  // the rows forward() gives at those positions; advances the state. Others throw std::logic_error.
  virtual torch::Tensor step(const torch::Tensor& tokens, GenerationState& state);
  int64_t parameter_count() const;
};

// ---- Sequence backbone: n_layers x [x + mixer(conv(norm(x))); x + ffn(norm(x))], then a final norm.
// Per layer: the mixer (`layers`: one registered mixer per layer, e.g. Jamba's mamba with one attention in eight;
// empty = `mixer` in every layer), an optional short causal depthwise convolution before the mixer (`short_conv`,
// Based-style), and the feed-forward kind (`ffn_layers`: dense or moe, one entry = every layer).
struct BackboneOptions {
  std::string mixer = "attention";
  MixerOptions mixer_options;  // common options of every layer; `own` is that of `mixer`
  int64_t n_layers = 2;        // follows `layers` when that is given
  int64_t ffn_mult = 2;  // 0 = no feed-forward block
  double dropout = 0.0;
  // Hybrids: the mixer of each layer (empty = `mixer` everywhere). A layer whose mixer is not `mixer` takes its own
  // options from `layer_own` (that mixer's own options struct; missing = its defaults).
  std::vector<std::string> layers;
  std::map<std::string, std::any> layer_own;
  // Feed-forward kind of each layer, "dense" or "moe" (empty = dense; one entry = every layer).
  std::vector<std::string> ffn_layers;
  MoeOptions moe;          // the moe feed-forwards (hidden width ffn_mult · d_model per expert)
  int64_t short_conv = 0;  // kernel of the causal depthwise convolution before every mixer (0 = none)

  int64_t layer_count() const { return layers.empty() ? n_layers : static_cast<int64_t>(layers.size()); }
  std::string layer_mixer(int64_t l) const;   // the registered mixer name of layer l ("transformer" -> "attention")
  bool layer_moe(int64_t l) const;            // layer l's feed-forward is a mixture of experts
  MixerOptions layer_options(int64_t l) const;  // mixer_options with layer l's own options
};

// Causal depthwise convolution over the sequence: y_i = b + Σ_{j<k} w_j ⊙ x_{i-k+1+j} (zeros before the start).
// Padded positions (mask false) are zeroed before the convolution, so they never reach a real token.
class ShortConvImpl : public torch::nn::Module {
 public:
  ShortConvImpl(int64_t d_model, int64_t kernel);
  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
  // x: (B, m, d), the m tokens after those `buffer` has seen (buffer: the last kernel-1 inputs, (B, k-1, d); undefined
  // = none seen) -> (B, m, d), as forward gives at those positions; the buffer advances.
  torch::Tensor step(const torch::Tensor& x, torch::Tensor& buffer);
  double flops(int64_t n) const { return 2.0 * static_cast<double>(n * kernel_ * d_); }
  torch::nn::Conv1d conv{nullptr};  // (d, 1, k), groups = d

 private:
  int64_t d_, kernel_;
};
TORCH_MODULE(ShortConv);

// What a causal model keeps of the tokens it has seen, for generation: each layer's mixer state and short-convolution
// buffer. `position` counts the tokens seen.
struct GenerationState {
  int64_t position = 0;
  std::vector<MixerState> mixers;
  std::vector<torch::Tensor> conv;
  int64_t bytes() const;
};

class BackboneImpl : public torch::nn::Module {
 public:
  explicit BackboneImpl(const BackboneOptions& options);
  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask);
  // Causal models: x (B, m, d), the m real tokens after the state.position seen -> (B, m, d), the rows forward()
  // gives at those positions (moe layers: when no assignment is dropped for capacity). Advances the state.
  torch::Tensor step(torch::Tensor x, GenerationState& state);
  // Analytic forward FLOPs of n real tokens (moe layers: no assignment dropped).
  double flops(int64_t n) const;
  const std::vector<std::shared_ptr<SequenceMixer>>& mixers() const { return mixers_; }
  int64_t n_layers() const { return static_cast<int64_t>(mixers_.size()); }
  const BackboneOptions& options() const { return options_; }

  // The auxiliary loss of the feed-forward blocks of the last forward: Σ over moe layers of aux_weight · balance
  // loss (undefined when there is no moe layer). The compute objective adds it like the mixers' aux_loss().
  torch::Tensor aux_loss() const;
  bool has_moe() const;
  // FLOPs of the last forward's moe assignments dropped for capacity (summed over the batch; they did not run):
  // flops() counts every assignment, so realised work is flops() per sequence minus this.
  double moe_dropped_flops() const;
  // The moe feed-forward of layer l (empty holder for a dense layer).
  MoeFeedForward moe(int64_t l) const { return moe_.at(static_cast<size_t>(l)); }

  // Structured pruning of the feed-forward hidden units of layer l (cerebra/pruning.h). ffn_units is 0 when the
  // backbone has no feed-forward block and for moe layers (experts are not pruned: those layers are skipped, and
  // ffn_taylor / prune_ffn / mask_ffn refuse them).
  int64_t ffn_units(int64_t l) const;
  double ffn_unit_flops(int64_t n) const;  // per sequence of n tokens: 2·n·d (in) + 2·n·d (out)
  torch::Tensor ffn_taylor(int64_t l) const;  // (units) Σ g·w over ffn_in row j, its bias and ffn_out column j
  void prune_ffn(int64_t l, const std::vector<int64_t>& keep);
  void mask_ffn(int64_t l, const std::vector<int64_t>& keep);

 private:
  torch::Tensor run(torch::Tensor x, const torch::Tensor& mask, GenerationState* state);
  void tell_feedforward_flops(int64_t l);
  void check_dense_ffn(int64_t l, const char* what) const;
  BackboneOptions options_;
  std::vector<std::shared_ptr<SequenceMixer>> mixers_;
  std::vector<torch::nn::LayerNorm> norm1_, norm2_;
  std::vector<ShortConv> conv_;                    // empty when short_conv = 0
  std::vector<torch::nn::Linear> ffn_in_, ffn_out_;  // empty holders at moe layers
  std::vector<MoeFeedForward> moe_;                // empty holders at dense layers
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Dropout drop_{nullptr};
};
TORCH_MODULE(Backbone);

// What to build for a run (config keys of group "model", and the mixer's own keys), parsed with the run's spec.
struct ModelSpec {
  std::string name = "transformer";  // ols, xgboost, nb, logreg, mlp, transformer (= the attention mixer), or a mixer's name
  BackboneOptions backbone;          // sequence models: the mixer (with its own typed options) and the blocks
  bool tie_embeddings = false;       // token heads: the output layer is the input embedding (n_classes = vocab)
  int64_t mlp_hidden = 256;          // mlp: hidden width; its depth is backbone.n_layers, its dropout backbone.dropout
  XgbParams xgb;                     // xgboost (threads set by the run)
  TextBaselineParams text;           // nb, logreg (text tasks)
  // Fitted on the whole training part by the model's own method rather than trained by the run's gradient loop.
  bool is_estimator() const { return name == "ols" || name == "xgboost" || is_text_baseline(); }
  bool is_text_baseline() const { return name == "nb" || name == "logreg"; }
};
// The mixer a sequence model name stands for ("transformer" -> "attention").
std::string mixer_for_model(const std::string& model);

// Model names a task can build: "mlp", "transformer" (= the "attention" mixer), and every registered mixer.
std::vector<std::string> tabular_model_names();
std::shared_ptr<Model> make_tabular_model(const ModelSpec& spec, const InputSchema& schema);

}  // namespace cerebra
