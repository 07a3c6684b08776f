// Models: a batch type shared by all tasks, the model interface, the sequence backbone (blocks of
// mixer + feed-forward), and the registry that builds a model by name for a task.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "cerebra/core/batch.h"
#include "cerebra/models/baselines.h"
#include "cerebra/models/mixer.h"

namespace cerebra {

class BackboneImpl;

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
  int64_t parameter_count() const;
};

// ---- Sequence backbone: n_layers x [x + mixer(norm(x)); x + ffn(norm(x))], then a final norm.
struct BackboneOptions {
  std::string mixer = "attention";
  MixerOptions mixer_options;
  int64_t n_layers = 2;
  int64_t ffn_mult = 2;  // 0 = no feed-forward block
  double dropout = 0.0;
};

class BackboneImpl : public torch::nn::Module {
 public:
  explicit BackboneImpl(const BackboneOptions& options);
  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask);
  double flops(int64_t n) const;
  const std::vector<std::shared_ptr<SequenceMixer>>& mixers() const { return mixers_; }
  int64_t n_layers() const { return static_cast<int64_t>(mixers_.size()); }

  // Structured pruning of the feed-forward hidden units of layer l (cerebra/pruning.h). ffn_units is 0 when the
  // backbone has no feed-forward block.
  int64_t ffn_units(int64_t l) const;
  double ffn_unit_flops(int64_t n) const;  // per sequence of n tokens: 2·n·d (in) + 2·n·d (out)
  torch::Tensor ffn_taylor(int64_t l) const;  // (units) Σ g·w over ffn_in row j, its bias and ffn_out column j
  void prune_ffn(int64_t l, const std::vector<int64_t>& keep);
  void mask_ffn(int64_t l, const std::vector<int64_t>& keep);

 private:
  void tell_feedforward_flops(int64_t l);
  BackboneOptions options_;
  std::vector<std::shared_ptr<SequenceMixer>> mixers_;
  std::vector<torch::nn::LayerNorm> norm1_, norm2_;
  std::vector<torch::nn::Linear> ffn_in_, ffn_out_;
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Dropout drop_{nullptr};
};
TORCH_MODULE(Backbone);

// What to build for a run (config keys of group "model", and the mixer's own keys), parsed with the run's spec.
struct ModelSpec {
  std::string name = "transformer";  // ols, xgboost, mlp, transformer (= the attention mixer), or a mixer's name
  BackboneOptions backbone;          // sequence models: the mixer (with its own typed options) and the blocks
  int64_t mlp_hidden = 256;          // mlp: hidden width; its depth is backbone.n_layers, its dropout backbone.dropout
  XgbParams xgb;                     // xgboost (threads set by the run)
  bool is_estimator() const { return name == "ols" || name == "xgboost"; }  // fitted, not trained by gradients
};
// The mixer a sequence model name stands for ("transformer" -> "attention").
std::string mixer_for_model(const std::string& model);

// Model names a task can build: "mlp", "transformer" (= the "attention" mixer), and every registered mixer.
std::vector<std::string> tabular_model_names();
std::shared_ptr<Model> make_tabular_model(const ModelSpec& spec, const InputSchema& schema);

}  // namespace cerebra
