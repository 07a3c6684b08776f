// Models for tabular tasks: an MLP over numerics and one-hot categories, and sequence models over feature tokens
// (FT-Transformer style: each feature becomes a d-dimensional token, a learned CLS token is appended last, the
// backbone mixes them, and the head reads the CLS token; a routing mixer always routes the CLS token).
#include <torch/torch.h>

#include <algorithm>

#include "cerebra/core/config.h"
#include "cerebra/models/cerebra_layer.h"
#include "cerebra/models/models.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace {

torch::Tensor one_hot_input(const Batch& b, const std::vector<int64_t>& cardinalities) {
  std::vector<torch::Tensor> parts;
  if (b.num.defined() && b.num.size(1) > 0) parts.push_back(b.num);
  for (size_t j = 0; j < cardinalities.size(); ++j)
    parts.push_back(torch::one_hot(b.cat.select(1, static_cast<int64_t>(j)), cardinalities[j]).to(torch::kFloat32));
  return torch::cat(parts, 1);
}

class MlpModel final : public Model {
 public:
  MlpModel(const InputSchema& s, int64_t hidden, int64_t layers, double dropout)
      : cardinalities_(s.cardinalities), hidden_(hidden), n_out_(s.n_outputs) {
    TORCH_CHECK(layers >= 1 && hidden >= 1, "mlp: n_layers and mlp_hidden must be >= 1");
    in_width_ = s.n_numeric;
    for (auto c : s.cardinalities) in_width_ += c;
    int64_t w = in_width_;
    for (int64_t l = 0; l < layers; ++l) {
      layers_.push_back(register_module("fc" + std::to_string(l), torch::nn::Linear(w, hidden)));
      w = hidden;
    }
    head_ = register_module("head", torch::nn::Linear(hidden, n_out_));
    drop_ = register_module("drop", torch::nn::Dropout(dropout));
  }

  torch::Tensor forward(const Batch& b) override {
    auto x = one_hot_input(b, cardinalities_);
    for (auto& l : layers_) x = drop_->forward(torch::relu(cerebra::linear(l, x)));
    return cerebra::linear(head_, x);
  }

  double flops_per_example() const override {
    double f = 2.0 * in_width_ * hidden_;
    f += 2.0 * hidden_ * hidden_ * static_cast<double>(layers_.size() - 1);
    return f + 2.0 * hidden_ * n_out_;
  }

 private:
  std::vector<int64_t> cardinalities_;
  int64_t in_width_, hidden_, n_out_;
  std::vector<torch::nn::Linear> layers_;
  torch::nn::Linear head_{nullptr};
  torch::nn::Dropout drop_{nullptr};
};

// The backbone options with every Cerebra layer told that the last token is the readout (always routed: a CLS token
// that skipped its blocks would leave the head reading its initial embedding).
BackboneOptions route_readout(BackboneOptions bo) {
  auto mark = [](const std::string& mixer, std::any& own) {
    if (mixer != "cerebra") return;
    CerebraOptions o = own.has_value() ? std::any_cast<CerebraOptions>(own) : CerebraOptions{};
    o.route_last = true;
    own = o;
  };
  mark(bo.mixer, bo.mixer_options.own);
  for (auto& [name, own] : bo.layer_own) mark(name, own);
  if (!bo.layers.empty())
    for (int64_t l = 0; l < bo.layer_count(); ++l)
      if (bo.layer_mixer(l) == "cerebra" && !bo.layer_own.count("cerebra")) mark("cerebra", bo.layer_own["cerebra"]);
  return bo;
}

class FeatureTokenModel final : public Model {
 public:
  FeatureTokenModel(const InputSchema& s, const BackboneOptions& options)
      : n_num_(s.n_numeric), n_out_(s.n_outputs) {
    const BackboneOptions bo = route_readout(options);
    const int64_t d = bo.mixer_options.d_model;
    d_ = d;
    if (n_num_ > 0) {
      num_weight_ = register_parameter("num_weight", torch::randn({n_num_, d}) * 0.1);
      num_bias_ = register_parameter("num_bias", torch::zeros({n_num_, d}));
    }
    int64_t total = 0;
    std::vector<int64_t> offsets;
    for (auto c : s.cardinalities) {
      offsets.push_back(total);
      total += c;
    }
    n_cat_ = static_cast<int64_t>(s.cardinalities.size());
    if (n_cat_ > 0) {
      cat_offsets_ = register_buffer("cat_offsets", torch::tensor(offsets, torch::kInt64));
      embed_ = register_module("embed", torch::nn::Embedding(torch::nn::EmbeddingOptions(total, d)));
      cat_bias_ = register_parameter("cat_bias", torch::zeros({n_cat_, d}));
    }
    cls_ = register_parameter("cls", torch::randn({1, 1, d}) * 0.02);
    backbone_ = register_module("backbone", Backbone(bo));
    head_ = register_module("head", torch::nn::Linear(d, n_out_));
  }

  torch::Tensor forward(const Batch& b) override {
    const int64_t B = b.size();
    std::vector<torch::Tensor> toks;
    if (n_num_ > 0) toks.push_back(b.num.unsqueeze(-1) * num_weight_ + num_bias_);                   // (B, Fn, d)
    if (n_cat_ > 0) toks.push_back(embed_->forward(b.cat + cat_offsets_) + cat_bias_);                // (B, Fc, d)
    toks.push_back(cls_.expand({B, 1, d_}));
    auto x = torch::cat(toks, 1);  // (B, F + 1, d)
    auto h = backbone_->forward(x, torch::Tensor());
    return cerebra::linear(head_, h.select(1, h.size(1) - 1));
  }

  double flops_per_example() const override {
    return backbone_->flops(n_num_ + n_cat_ + 1) + 2.0 * d_ * n_out_;
  }
  std::vector<std::shared_ptr<SequenceMixer>> mixers() const override { return backbone_->mixers(); }
  int64_t tokens_per_example() const override { return n_num_ + n_cat_ + 1; }
  BackboneImpl* backbone() override { return backbone_.get(); }

 private:
  int64_t n_num_, n_cat_ = 0, n_out_, d_;
  torch::Tensor num_weight_, num_bias_, cat_offsets_, cat_bias_, cls_;
  torch::nn::Embedding embed_{nullptr};
  Backbone backbone_{nullptr};
  torch::nn::Linear head_{nullptr};
};


}  // namespace

std::vector<std::string> tabular_model_names() {
  std::vector<std::string> names{"mlp", "transformer"};
  for (const auto& m : mixer_names())
    if (m != "attention") names.push_back(m);
  return names;
}

std::string mixer_for_model(const std::string& model) { return model == "transformer" ? "attention" : model; }

std::shared_ptr<Model> make_tabular_model(const ModelSpec& spec, const InputSchema& schema) {
  if (spec.name == "mlp")
    return std::make_shared<MlpModel>(schema, spec.mlp_hidden, spec.backbone.n_layers, spec.backbone.dropout);
  auto names = mixer_names();
  if (std::find(names.begin(), names.end(), mixer_for_model(spec.name)) == names.end()) {
    std::string known = "ols, xgboost";
    for (const auto& n : tabular_model_names()) known += ", " + n;
    throw ConfigError("unknown model '" + spec.name + "'; available: " + known);
  }
  return std::make_shared<FeatureTokenModel>(schema, spec.backbone);
}

}  // namespace cerebra
