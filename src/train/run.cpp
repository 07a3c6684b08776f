// The run pipeline (include/cerebra/train/run.h): one train_run, load_run and eval_run for every task and model.
// The loop is train_model (train.h); the compute penalty and realised FLOPs come from ComputeObjective, the rest of
// the recipe (sampler, pruning, QAT) from the hooks in recipe.h.
#include "cerebra/train/run.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <numeric>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/core/io.h"
#include "cerebra/core/runtime.h"
#include "cerebra/core/state_archive.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/data/tabular.h"
#include "cerebra/models/baselines.h"
#include "cerebra/models/cerebra_layer.h"
#include "cerebra/models/pruning.h"
#include "cerebra/models/quant.h"
#include "cerebra/train/compute_objective.h"
#include "cerebra/train/distributed.h"
#include "cerebra/train/recipe.h"
#include "cerebra/train/train.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {

// ---- models

// Fixed sinusoidal positions (Vaswani et al.): no parameters, so every mixer gets the same positional signal.
torch::Tensor sinusoidal_positions(int64_t n, int64_t d) {
  auto pos = torch::arange(n, torch::kFloat32).unsqueeze(1);                         // (n, 1)
  auto i = torch::arange(0, d, 2, torch::kFloat32);                                  // (ceil(d/2),)
  auto angle = pos * torch::exp(i * (-std::log(10000.0) / static_cast<double>(d)));  // (n, ceil(d/2))
  auto pe = torch::zeros({n, d});
  pe.slice(1, 0, d, 2).copy_(torch::sin(angle));
  pe.slice(1, 1, d, 2).copy_(torch::cos(angle).slice(1, 0, d / 2));
  return pe;
}

// Positions per example where a sequence model's head runs: one pooled row (sequence classification), the task's
// answer positions when it names them, else every token.
double head_positions(const TaskInfo& info) {
  if (info.head == HeadKind::SequenceClassification) return 1.0;
  return static_cast<double>(info.answers > 0 ? info.answers : info.n);
}

// A token task's model: embedding + positions + Backbone(mixer) + head.
class SeqModel final : public Model {
 public:
  // tie (make_model checks n_classes = vocab): the head scores against the input embedding, which is then
  // initialised N(0, 1/d) and scaled by √d on input, as in Vaswani et al. 2017, §3.4; the head keeps its own bias.
  SeqModel(const TaskInfo& info, const BackboneOptions& bo, bool tie)
      : info_(info), d_(bo.mixer_options.d_model), tied_(tie) {
    embed_ = register_module("embed", torch::nn::Embedding(info.vocab, d_));
    backbone_ = register_module("backbone", Backbone(bo));
    if (tied_) {
      torch::NoGradGuard no_grad;
      embed_->weight.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(d_)));
      head_bias_ = register_parameter("head_bias", torch::zeros({info.n_classes}));
    } else {
      head_ = register_module("head", torch::nn::Linear(d_, info.n_classes));
    }
  }

  // -> (B, n, n_classes) for token-level heads ((K, n_classes) at the batch's K answer positions when it names them),
  // (B, n_classes) for sequence classification.
  torch::Tensor forward(const Batch& b) override {
    TORCH_CHECK(b.tokens.defined() && b.tokens.dim() == 2, "sequence model: tokens must be (B, n)");
    const int64_t n = b.tokens.size(1);
    if (pe_.size(0) < n) pe_ = sinusoidal_positions(std::max(n, info_.n), d_);
    auto x = embed(b.tokens) + pe_.slice(0, 0, n);
    // An all-real batch goes without a mask (every mixer's fast path).
    torch::Tensor mask = b.mask.defined() && !b.mask.all().item<bool>() ? b.mask : torch::Tensor();
    auto h = backbone_->forward(x, mask);
    if (info_.head == HeadKind::SequenceClassification) {
      torch::Tensor pooled;
      if (mask.defined()) {
        auto m = mask.unsqueeze(-1).to(h.scalar_type());
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0);
      } else {
        pooled = h.mean(1);
      }
      return head(pooled);
    }
    if (b.answers.defined() && info_.head == HeadKind::TokenClassification) {
      TORCH_CHECK(b.answers.sizes() == b.tokens.sizes(), "sequence model: answers must be (B, n) = ", b.tokens.sizes(),
                  ", got ", b.answers.sizes());
      return head(h.index({b.answers}));  // (K, d) -> (K, n_classes)
    }
    return head(h);
  }

  torch::Tensor step(const torch::Tensor& tokens, GenerationState& state) override {
    if (info_.head != HeadKind::CausalLM)
      throw std::logic_error("this model cannot generate: task " + info_.name + " is not a causal language model");
    TORCH_CHECK(tokens.dim() == 2, "step: tokens must be (B, m), got ", tokens.sizes());
    const int64_t end = state.position + tokens.size(1);
    if (pe_.size(0) < end) pe_ = sinusoidal_positions(std::max(2 * end, info_.n), d_);
    auto x = embed(tokens) + pe_.slice(0, state.position, end);
    return head(backbone_->step(x, state));
  }

  double flops_per_example() const override {
    const double head = 2.0 * static_cast<double>(d_ * info_.n_classes);
    return backbone_->flops(info_.n) + head * head_positions(info_);
  }
  std::vector<std::shared_ptr<SequenceMixer>> mixers() const override { return backbone_->mixers(); }
  int64_t tokens_per_example() const override { return info_.n; }
  BackboneImpl* backbone() override { return backbone_.get(); }

 private:
  torch::Tensor embed(const torch::Tensor& tokens) {
    auto e = embed_->forward(tokens);
    return tied_ ? e * std::sqrt(static_cast<double>(d_)) : e;
  }
  torch::Tensor head(const torch::Tensor& h) {
    return tied_ ? torch::linear(h, embed_->weight, head_bias_) : cerebra::linear(head_, h);
  }

  TaskInfo info_;
  int64_t d_;
  bool tied_;
  torch::Tensor pe_ = torch::zeros({0, 0});
  torch::nn::Embedding embed_{nullptr};
  Backbone backbone_{nullptr};
  torch::nn::Linear head_{nullptr};  // untied only
  torch::Tensor head_bias_;          // tied only
};

// A model fitted by its own method on the whole training part rather than trained by the run's gradient loop (ols,
// xgboost: they read the one-hot design of a tabular batch; nb, logreg: the raw text of a text batch).
class Estimator : public Model {
 public:
  explicit Estimator(std::vector<int64_t> cardinalities) : cardinalities_(std::move(cardinalities)) {}
  // Fits on the training batch (early stopping, where the method has it, on the validation batch); returns what the
  // summary reports of the fit.
  virtual nlohmann::json fit(const Batch& train, const Batch& val) = 0;
  virtual void save_to(const std::string& path) const = 0;
  virtual void load_from(const std::string& path, int threads) = 0;

 protected:
  torch::Tensor design(const Batch& b) const { return one_hot_design(b.num, b.cat, cardinalities_); }
  int64_t width(const InputSchema& s) const {
    return s.n_numeric + std::accumulate(s.cardinalities.begin(), s.cardinalities.end(), int64_t{0});
  }

 private:
  std::vector<int64_t> cardinalities_;
};

class OlsModel final : public Estimator {
 public:
  explicit OlsModel(const InputSchema& s) : Estimator(s.cardinalities), width_(width(s)) {}
  torch::Tensor forward(const Batch& b) override {
    return ols_predict(design(b), beta_).to(torch::kFloat32).reshape({-1, 1});
  }
  double flops_per_example() const override { return 2.0 * static_cast<double>(width_); }  // one dot product
  nlohmann::json fit(const Batch& train, const Batch&) override {
    beta_ = fit_ols(design(train), train.y);
    return nlohmann::json::object();
  }
  void save_to(const std::string& path) const override { torch::save(beta_, path); }
  void load_from(const std::string& path, int) override {
    torch::serialize::InputArchive ar;
    load_archive(ar, path);
    ar.read("0", beta_);
  }
  int64_t parameters() const { return beta_.defined() ? beta_.numel() : 0; }

 private:
  int64_t width_;
  torch::Tensor beta_;
};

class XgbModel final : public Estimator {
 public:
  XgbModel(const InputSchema& s, XgbParams params) : Estimator(s.cardinalities), params_(params) {}
  torch::Tensor forward(const Batch& b) override { return xgb_.predict(design(b)).reshape({-1, 1}); }
  double flops_per_example() const override { return std::nan(""); }  // trees: no matmul-class work
  nlohmann::json fit(const Batch& train, const Batch& val) override {
    xgb_.fit(design(train), train.y, design(val), val.y, params_);
    return {{"rounds_run", xgb_.rounds_run()}, {"best_rounds", xgb_.best_rounds()}};
  }
  void save_to(const std::string& path) const override { xgb_.save(path); }
  void load_from(const std::string& path, int threads) override { xgb_.load(path, threads); }

 private:
  XgbParams params_;
  XgbRegressor xgb_;
};

// The bag-of-words baselines of a text task (nb, logreg): they read the batch's raw text.
class TextModel final : public Estimator {
 public:
  TextModel(TextLinearClassifier::Method method, const TextBaselineParams& params, int64_t n_classes)
      : Estimator({}), clf_(method, params, n_classes) {}
  torch::Tensor forward(const Batch& b) override { return clf_.logits(texts(b)); }
  double flops_per_example() const override { return clf_.flops_per_example(); }
  nlohmann::json fit(const Batch& train, const Batch& val) override {
    return clf_.fit(texts(train), labels(train), texts(val), labels(val));
  }
  void save_to(const std::string& path) const override { clf_.save(path); }
  void load_from(const std::string& path, int) override { clf_.load(path); }
  int64_t parameters() const { return clf_.parameters(); }

 private:
  static const std::vector<std::string>& texts(const Batch& b) {
    if (b.size() > 0 && static_cast<int64_t>(b.text.size()) != b.size())
      throw std::logic_error("text baseline: the batch carries no text");
    return b.text;
  }
  static std::vector<int64_t> labels(const Batch& b) {
    if (!b.y.defined()) return {};
    auto y = b.y.contiguous();
    return std::vector<int64_t>(y.data_ptr<int64_t>(), y.data_ptr<int64_t>() + y.numel());
  }
  TextLinearClassifier clf_;
};

int64_t param_count(const Model& m) {
  if (const auto* ols = dynamic_cast<const OlsModel*>(&m)) return ols->parameters();
  if (const auto* text = dynamic_cast<const TextModel*>(&m)) return text->parameters();
  return m.parameter_count();
}

// ---- rows: the trainer sees opaque ids, (part << 40) | index within the part

constexpr int kPartShift = 40;
std::vector<int64_t> part_rows(Part p, int64_t count) {
  std::vector<int64_t> r(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) r[i] = (static_cast<int64_t>(p) << kPartShift) | i;
  return r;
}
Part part_of(int64_t row) { return static_cast<Part>(row >> kPartShift); }
int64_t index_of(int64_t row) { return row & ((int64_t{1} << kPartShift) - 1); }
Batch batch_of(const Task& task, const std::vector<int64_t>& rows) {
  std::vector<int64_t> idx(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) idx[i] = index_of(rows[i]);
  return task.batch(part_of(rows.front()), idx);
}
std::vector<int64_t> first_rows(const Task& task, Part part, int64_t count) {
  std::vector<int64_t> rows(static_cast<size_t>(std::min(count, task.size(part))));
  std::iota(rows.begin(), rows.end(), 0);
  return rows;
}

// Before training: the out directory's file system must hold two resume checkpoints (the last good one and the
// one being written: weights, best weights and AdamW's two moments, float32) and the final model.
void check_room_for_checkpoints(const fs::path& out, int64_t params, int64_t n_train) {
  const double checkpoint = static_cast<double>(params) * 4.0 * 4.0 + static_cast<double>(n_train) * 48.0;
  const double need = 2.0 * checkpoint + static_cast<double>(params) * 4.0 + (1 << 20);
  std::error_code ec;
  const fs::space_info space = fs::space(out, ec);
  if (!ec && static_cast<double>(space.available) < need)
    throw std::runtime_error(fmt::format("{} has {:.1f} MiB free; this run needs about {:.1f} MiB for its "
                                         "checkpoints and model", out.string(),
                                         static_cast<double>(space.available) / 1048576.0, need / 1048576.0));
}

nlohmann::json number_or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

}  // namespace

// ---- models

std::vector<std::string> seq_model_names() {
  std::vector<std::string> names{"transformer"};
  for (const auto& m : mixer_names())
    if (m != "attention") names.push_back(m);
  return names;
}

std::string checkpoint_name(const std::string& model) { return model == "xgboost" ? "model.xgb.json" : "model.pt"; }

std::shared_ptr<Model> make_model(const ModelSpec& spec, const TaskInfo& info) {
  const std::string& name = spec.name;
  if (spec.is_text_baseline()) {
    if (!info.has_text)
      throw ConfigError(fmt::format("model '{}' reads words and task {} has no text (text tasks: wordnet)", name,
                                    info.name));
    return std::make_shared<TextModel>(name == "nb" ? TextLinearClassifier::Method::NaiveBayes
                                                    : TextLinearClassifier::Method::LogisticRegression,
                                       spec.text, info.n_classes);
  }
  if (info.head == HeadKind::Regression) {
    if (name == "ols") return std::make_shared<OlsModel>(info.schema);
    if (name == "xgboost") return std::make_shared<XgbModel>(info.schema, spec.xgb);
    return make_tabular_model(spec, info.schema);
  }
  const auto mixers = mixer_names();
  if (std::find(mixers.begin(), mixers.end(), mixer_for_model(name)) == mixers.end()) {
    std::string known = info.has_text ? "nb, logreg" : "";
    for (const auto& n : seq_model_names()) known += (known.empty() ? "" : ", ") + n;
    throw ConfigError("model '" + name + "' cannot run the sequence task " + info.name + "; available: " + known);
  }
  BackboneOptions bo = spec.backbone;
  bo.mixer_options.causal = info.needs_causal;
  if (info.needs_causal) {
    bool causal = false;
    std::string why;
    try {
      causal = make_mixer(bo.mixer, bo.mixer_options)->is_causal();
    } catch (const std::exception& e) {
      why = e.what();
      why = why.substr(0, why.find('\n'));
    }
    if (!causal)
      throw ConfigError(fmt::format("model '{}' has no causal form{}; task {} is a causal language model and needs a "
                                    "mixer whose output at position i depends only on positions <= i "
                                    "(e.g. transformer, lstm, cnn, mamba)",
                                    name, why.empty() ? "" : " (" + why + ")", info.name));
  }
  if (spec.tie_embeddings && (info.head == HeadKind::SequenceClassification || info.n_classes != info.vocab))
    throw ConfigError(fmt::format("tie_embeddings: task {} predicts {} classes, not its {} input tokens; the head can "
                                  "share the embedding only where a task predicts its own input tokens",
                                  info.name, info.n_classes, info.vocab));
  return std::make_shared<SeqModel>(info, bo, spec.tie_embeddings);
}

double estimate_train_bytes(const RunSpec& spec, const TaskInfo& info, int64_t params) {
  const BackboneOptions& bo = spec.model.backbone;
  const std::string& mixer = bo.mixer;
  const double B = static_cast<double>(spec.trainer.batch_size), Be = static_cast<double>(spec.trainer.eval_batch_size);
  const double n = static_cast<double>(info.n), d = static_cast<double>(bo.mixer_options.d_model);
  const double L = static_cast<double>(bo.n_layers), h = static_cast<double>(bo.mixer_options.n_heads);
  const double ffn = static_cast<double>(bo.ffn_mult);
  // Floats kept per token and layer for backward, by mixer (inputs, projections, gates, states), rough.
  double per_token = mixer == "attention" ? 8 : mixer == "lstm" ? 16 : mixer == "mamba" ? 40 : mixer == "cnn" ? 10 : 16;
  per_token = (per_token + 4 + 2 * ffn) * d;
  double train = L * B * n * per_token * 4.0;
  double scores_train = 0, scores_eval = 0;
  if (mixer == "attention") {  // the naive kernel's materialised scores (an upper bound when the tiled one runs)
    scores_train = L * B * h * n * n * 4.0 * 3.0;  // scores, probabilities and their gradient
    scores_eval = Be * h * n * n * 4.0 * 2.0;
  } else if (mixer == "cerebra") {
    const double k = std::min(n, static_cast<double>(bo.mixer_options.own_as<CerebraOptions>().topk));
    scores_train = L * B * h * k * n * 4.0 * 3.0;
    scores_eval = Be * h * k * n * 4.0 * 2.0;
  }
  const double logits = head_positions(info) * info.n_classes * 4.0;
  train += scores_train + B * logits * 3.0;
  const double eval = Be * n * per_token * 4.0 / L + scores_eval + Be * logits;
  return std::max(train, eval) + static_cast<double>(params) * 4.0 * 4.0;
}

// ---- evaluation

torch::Tensor predict_part(Model& model, const Task& task, Part part, const std::vector<int64_t>& rows,
                           int64_t batch_size) {
  return predict(model, rows, batch_size, [&](const std::vector<int64_t>& r) { return task.batch(part, r); });
}

nlohmann::json evaluate(Model& model, const Task& task, Part part, int64_t batch_size, const std::string& prefix) {
  torch::NoGradGuard g;
  const bool was_training = model.is_training();
  model.eval();
  auto sink = task.metrics(part);
  const int64_t N = task.size(part);
  // Routing statistics of the causal Cerebra layers, averaged over layers and examples.
  std::map<std::string, double> routing;
  int64_t routed_batches = 0;
  for (int64_t lo = 0; lo < N; lo += batch_size) {
    std::vector<int64_t> rows(static_cast<size_t>(std::min(batch_size, N - lo)));
    std::iota(rows.begin(), rows.end(), lo);
    Batch b = task.batch(part, rows);
    sink->add(model.forward(b), b);
    for (const auto& m : model.mixers()) {
      const auto stats = m->stats();
      if (!stats.count("predictor_agreement")) continue;
      for (const char* key : {"predictor_agreement", "routed_fraction"})
        routing[key] += stats.at(key) * static_cast<double>(rows.size());
      routed_batches += static_cast<int64_t>(rows.size());
    }
  }
  model.train(was_training);
  nlohmann::json result = sink->result(prefix);
  for (const auto& [key, sum] : routing) result[prefix + "_" + key] = sum / static_cast<double>(routed_batches);
  return result;
}

// ---- training

RunProgress run_progress(const Config& config, const std::string& run_dir) {
  RunProgress p;
  const fs::path dir(run_dir);
  if (!fs::exists(dir / "config.yaml")) return p;
  Config run_config;
  try {
    run_config.load_yaml_file((dir / "config.yaml").string());
  } catch (const std::exception& e) {
    p.state = RunProgress::State::kOtherConfig;
    p.differences = {std::string("config.yaml does not load: ") + e.what()};
    return p;
  }
  p.differences = run_config.differences(config);
  if (!p.differences.empty()) {
    p.state = RunProgress::State::kOtherConfig;
    return p;
  }
  p.state = RunProgress::State::kUnfinished;
  p.has_checkpoint = fs::exists(dir / kResumeCheckpointFile);
  if (fs::exists(dir / "summary.json")) {
    try {
      const nlohmann::json s = read_json_file(dir / "summary.json");
      if (s.is_object() && s.contains("metrics") && s["metrics"].is_object()) p.state = RunProgress::State::kFinished;
    } catch (const std::exception&) {
    }
  }
  return p;
}

nlohmann::json train_run(const RunSpec& spec, const std::string& out_dir, const RunOptions& options) {
  const fs::path out(out_dir);
  Distributed* const dist = options.dist;
  const bool writer = !dist || dist->root();  // this process writes the run directory
  if (dist && spec.model.is_estimator())
    throw ConfigError(fmt::format("model '{}' is fitted by its own method, not trained by gradient steps; run it "
                                  "as one process (without --nproc or a world size)", spec.model.name));
  bool resume = false, finished = false;
  if (writer) {
    check_writable_dir(out);
    if (options.resume) {
      const RunProgress progress = run_progress(spec.config, out_dir);
      if (progress.state == RunProgress::State::kOtherConfig) {
        std::string keys;
        for (const auto& d : progress.differences) keys += "\n  " + d;
        throw ConfigError(fmt::format("cannot resume {}: it holds a run of another config (run's value -> this "
                                      "one):{}", out_dir, keys));
      }
      finished = progress.state == RunProgress::State::kFinished;
      resume = progress.state == RunProgress::State::kUnfinished;
    }
  }
  if (dist) {  // every rank runs rank 0's config and follows its decision
    dist->require_same(spec.config.to_yaml(), "resolved config");
    finished = dist->broadcast_int(finished ? 1 : 0, "whether the run is finished") != 0;
  }
  if (finished) return writer ? read_json_file(out / "summary.json") : nlohmann::json();
  if (writer && !resume)  // a new run: nothing an earlier run left may be taken for this one's
    for (const char* stale : {"summary.json", kResumeCheckpointFile, kPruneStateFile}) fs::remove(out / stale);
  const int threads = apply_runtime(spec.runtime);
  const std::string& kind = spec.model.name;
  auto task = make_task(spec.task);
  const TaskInfo& info = task->info();
  if (spec.trainer.group_by_length && (task->size(Part::Train) == 0 || task->length(Part::Train, 0) == 0))
    throw ConfigError(fmt::format("group_by_length: the examples of task {} all have one length (n = {}); it groups "
                                  "text of varying length (wordnet)", spec.task.name, info.n));
  if (writer) {
    write_text_file_atomic(out / "config.yaml", spec.config.to_yaml());
    task->save(out_dir);
  }

  reset_peak_tensor_bytes();
  reset_peak_rss();
  torch::manual_seed(static_cast<int64_t>(spec.trainer.seed));
  ModelSpec model_spec = spec.model;
  model_spec.xgb.threads = threads;
  auto net = make_model(model_spec, info);
  auto* estimator = dynamic_cast<Estimator*>(net.get());

  TrainerOptions to = spec.trainer;
  to.quiet = options.quiet || !writer;
  to.metrics_path = writer ? (out / "metrics.jsonl").string() : "";
  to.steps_path = writer && to.log_every > 0 ? (out / "steps.jsonl").string() : "";
  to.checkpoint_path = (out / kResumeCheckpointFile).string();
  to.resume = resume;
  to.dist = dist;
  int64_t n_train = task->size(Part::Train);
  if (spec.trainer.steps > 0 && !estimator) {  // a step budget: steps * batch_size examples (the pool cycled if smaller)
    const int64_t per_epoch = (n_train + to.batch_size - 1) / to.batch_size;
    if (spec.trainer.steps <= per_epoch) {
      n_train = std::min(n_train, spec.trainer.steps * to.batch_size);
      to.epochs = 1;
    } else {
      to.epochs = (spec.trainer.steps + per_epoch - 1) / per_epoch;
    }
    to.warmup_epochs = std::min(to.warmup_epochs, 0.1 * static_cast<double>(to.epochs));
  }
  if (!estimator && writer) check_room_for_checkpoints(out, param_count(*net), n_train);
  if (!options.quiet && writer)
    std::cerr << fmt::format("[{}] {}, {} params{}, threads={}{}\n", kind, task->log_line(), param_count(*net),
                             estimator ? "" : fmt::format(", {} training examples, {} epoch(s)", n_train, to.epochs),
                             threads,
                             spec.runtime.threads == 0 && threads < available_cores()
                                 ? fmt::format(" (of {} cores: the others were busy at the start; --threads N "
                                               "sets the count)",
                                               available_cores())
                                 : "");

  std::unique_ptr<ComputeObjective> compute;
  std::unique_ptr<Pruner> pruner;
  TrainResult tr;
  nlohmann::json training;
  // One no-grad forward of up to 64 examples of a part (what the realised-FLOP figures and the counter measure).
  auto probe = [&](Part part) {
    const auto rows = first_rows(*task, part, std::min<int64_t>(64, spec.trainer.eval_batch_size));
    predict_part(*net, *task, part, rows, static_cast<int64_t>(rows.size()));
    return static_cast<int64_t>(rows.size());
  };

  if (estimator) {
    const auto t0 = std::chrono::steady_clock::now();
    training = estimator->fit(task->batch(Part::Train, first_rows(*task, Part::Train, n_train)),
                              task->batch(Part::Val, first_rows(*task, Part::Val, task->size(Part::Val))));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tr.epoch_seconds = {s};
    tr.examples_per_second = static_cast<double>(n_train) / std::max(s, 1e-9);
    // One line per fit, so metrics.jsonl exists for every model.
    write_text_file(out / "metrics.jsonl", nlohmann::json{{"epoch", 1}, {"epoch_seconds", s}}.dump() + "\n");
  } else {
    TrainerHooks hooks;
    hooks.make_batch = [&](const std::vector<int64_t>& r) { return batch_of(*task, r); };
    hooks.example_length = [&](int64_t row) { return task->length(part_of(row), index_of(row)); };
    hooks.loss = [&](const torch::Tensor& pred, const Batch& b) { return task->loss(pred, b); };
    hooks.per_example_loss = [&](const torch::Tensor& pred, const Batch& b) { return task->per_example_loss(pred, b); };
    hooks.describe_val = [&](double vl) { return task->describe_val(vl); };
    const ComputeSchedule& schedule = spec.compute;
    compute = std::make_unique<ComputeObjective>(*net, schedule);
    if (compute->active()) {
      const auto* cerebra = std::any_cast<CerebraOptions>(&spec.model.backbone.mixer_options.own);
      const int64_t n_tokens = net->tokens_per_example();
      if (!info.is_sequence() && cerebra && cerebra->mode == RoutingMode::kTopK && cerebra->topk >= n_tokens &&
          !options.quiet)
        std::cerr << fmt::format("[{}] note: topk {} >= the {} tokens of an example ({} features + CLS): every token "
                                 "takes the full path; routing cannot save compute on this task at this k\n",
                                 kind, cerebra->topk, n_tokens, n_tokens - 1);
      hooks.on_epoch_begin = [&](int64_t epoch) { compute->begin_epoch(epoch); };
      hooks.on_step_begin = [&](double position) { compute->begin_step(position); };
      hooks.objective = [&](const torch::Tensor& loss, const Batch& b) { return compute->objective(loss, b.size(), b.mask); };
      hooks.epoch_report = [&]() {
        nlohmann::json r = compute->epoch_summary();
        const int64_t B = probe(Part::Val);
        if (B > 0) {
          r["val_realised_flops_per_example"] = compute->realised_per_example(B);
          r["val_expected_flops_per_example"] = compute->expected_per_example(B);
          r["val_relative_flops"] = compute->realised_per_example(B) / compute->dense_flops_per_example();
          r["layers"] = compute->layer_stats();
        }
        return r;
      };
      hooks.first_selectable_epoch = std::min<int64_t>(schedule.first_epoch_after_ramp(), to.epochs);
      hooks.save_state = [&](torch::serialize::OutputArchive& ar) {
        torch::serialize::OutputArchive sub;
        compute->save(sub);
        ar.write("compute", sub);
      };
      hooks.load_state = [&](torch::serialize::InputArchive& ar) {
        torch::serialize::InputArchive sub;
        ar.read("compute", sub);
        compute->load(sub);
      };
    }
    // Ĉ: each example's realised FLOPs in the forward that just ran, relative to the dense model (it varies with
    // routing and, where the model runs only real tokens, with length).
    hooks.batch_cost = [&](const Batch& b) { return compute->realised_relative_per_example(b.size()); };
    pruner = attach_pruning(hooks, *net, spec.prune, to.epochs, [&] { compute->refresh_static_flops(); });
    attach_qat(hooks, *net, spec.quant);  // QAT from qat_start_epoch (no-op unless qat: true)
    tr = train_model(*net, part_rows(Part::Train, n_train), part_rows(Part::Val, task->size(Part::Val)), to, hooks);
    training = {{"epochs_run", tr.epochs_run}, {"best_epoch", tr.best_epoch}, {"best_val_loss", tr.best_val_loss},
                {"train_examples", n_train},
                {"steps", tr.epochs_run * ((n_train + to.batch_size - 1) / to.batch_size)}};
    if (pruner) training["pruning"] = pruner->report();
    if (to.nan_policy == "skip") training["nan_skipped_steps"] = tr.nan_skipped_steps;
    if (tr.resumes > 0) training["resumes"] = tr.resumes;
    if (dist) training["distributed"] = dist->stats();
  }
  if (!writer) return nlohmann::json();  // rank 0 evaluates and writes the run
  const int64_t params = param_count(*net);  // of the pruned model, for a pruned run
  const double analytic = net->flops_per_example();

  // Measured FLOPs: the matmul-class ops of one forward over test examples; realised/expected from the mixers.
  double measured = std::nan(""), realised = analytic, expected = analytic, dense = analytic;
  if (!std::isnan(analytic)) {
    FlopCounter counter;
    const int64_t B = probe(Part::Test);
    measured = counter.total() / static_cast<double>(std::max<int64_t>(B, 1));
    if (compute) {
      realised = compute->realised_per_example(B);
      expected = compute->expected_per_example(B);
      dense = compute->dense_flops_per_example();
      if (info.has_text && B > 0) {
        // Variable-length text runs on batches padded to their longest example, not to max_len: a static model's
        // realised work is what the counter saw, and the dense reference is the dense model at the real lengths.
        if (!compute->active()) realised = expected = measured;
        dense = compute->dense_flops_of(batch_of(*task, first_rows(*task, Part::Test, B)).mask);
      }
    }
  }
  const int64_t eval_batch = spec.trainer.eval_batch_size;
  nlohmann::json metrics = evaluate(*net, *task, Part::Test, eval_batch, "test");
  metrics.update(evaluate(*net, *task, Part::Val, eval_batch, "val"));
  if (task->size(Part::Test) > 0 && metrics.contains(info.metric) && metrics[info.metric].is_number() &&
      !std::isfinite(metrics[info.metric].get<double>()))
    throw TrainingDiverged(fmt::format("the trained model's {} is not finite ({}); no summary written{}", info.metric,
                                       metrics[info.metric].get<double>(),
                                       tr.nan_skipped_steps > 0
                                           ? fmt::format(" ({} steps were skipped for non-finite values)",
                                                         tr.nan_skipped_steps)
                                           : ""));

  const fs::path ckpt = out / checkpoint_name(kind);
  if (estimator) {
    estimator->save_to(ckpt.string());
  } else {
    save_model(*net, ckpt.string());
    if (pruner)  // a pruned run: its shapes go beside the checkpoint
      save_prune_state(*net, *make_model(spec.model, info), (out / kPruneStateFile).string());
  }

  nlohmann::json flops = {{"analytic_forward_per_example", number_or_null(analytic)},
                          {"measured_forward_per_example", number_or_null(measured)},
                          {"realised_per_example", number_or_null(realised)},
                          {"expected_per_example", number_or_null(expected)},
                          {"dense_transformer_per_example", number_or_null(dense)},
                          {"convention", "2 per multiply-add of matmul-class ops (mm, addmm, bmm, mv, convolution, "
                                         "kernels)"}};
  const double train_total = std::accumulate(tr.epoch_seconds.begin(), tr.epoch_seconds.end(), 0.0);
  nlohmann::json time = {{"epoch_seconds_median", median(tr.epoch_seconds)}, {"epochs", tr.epoch_seconds.size()},
                         {"train_seconds_total", train_total}, {"examples_per_second", tr.examples_per_second}};
  nlohmann::json summary = {
      {"task", info.name},
      {"model", kind},
      {"params", params},
      {"metrics", metrics},
      {"primary_metric", info.metric},
      {"higher_is_better", info.higher_is_better},
      {"data", task->describe()},
      {"flops", flops},
      {"time", time},
      {"memory", {{"peak_tensor_bytes", peak_tensor_bytes()}, {"peak_rss_bytes", peak_rss_bytes()}}},
      {"training", training},
      {"threads", threads},
      {"threads_requested", spec.runtime.threads},  // 0: the cores idle at the start
      {"machine", machine_description()},
      {"blas", loaded_blas_library()},
      {"openmp_wait_policy", openmp_wait_policy()},
      {"torch_version", torch_version()},
      {"checkpoint", checkpoint_name(kind)},
  };
  if (info.is_sequence()) {  // per token, and the shape of the token task
    const double n = static_cast<double>(info.n);
    summary["d_model"] = spec.model.backbone.mixer_options.d_model;
    summary["task_info"] = {{"head", head_kind_name(info.head)}, {"n", info.n}, {"vocab", info.vocab},
                            {"n_classes", info.n_classes}, {"causal", info.needs_causal}};
    if (info.answers > 0) summary["task_info"]["answers_per_example"] = info.answers;
    summary["flops"].update({{"analytic_forward_per_token", analytic / n},
                             {"measured_forward_per_token", measured / n},
                             {"realised_per_token", realised / n},
                             {"expected_per_token", expected / n},
                             {"tokens_per_example", info.n}});
    summary["flops"]["convention"] = flops["convention"].get<std::string>() +
                                     "; per token = per example / n (n = max_len for variable-length text; measured "
                                     "runs on test batches padded to their longest example)";
    // Training tokens: a mixed-length curriculum trains on examples of its mean length.
    const auto& synthetic = spec.task.synthetic;
    summary["time"]["tokens_per_second"] =
        tr.examples_per_second * (synthetic.train_lengths.empty() ? n : mean_train_length(synthetic));
  }
  summary.update(task->summary_fields());
  if (spec.quant.qat) summary["quant"] = quant_summary(*net, spec.quant);
  // Written last and atomically (rename): a summary.json that exists is complete, so a sweep can trust it.
  write_text_file_atomic(out / "summary.json", summary.dump(2) + "\n");
  fs::remove(out / kResumeCheckpointFile);  // the run is complete: nothing to resume
  return summary;
}

// ---- loading and evaluation

std::shared_ptr<Model> load_run_model(const RunSpec& spec, const TaskInfo& info, const std::string& run_dir) {
  const fs::path ckpt = fs::path(run_dir) / checkpoint_name(spec.model.name);
  if (!fs::exists(ckpt)) throw std::runtime_error("checkpoint " + ckpt.string() + " not found");
  auto model = make_model(spec.model, info);
  if (auto* estimator = dynamic_cast<Estimator*>(model.get())) {
    estimator->load_from(ckpt.string(), spec.runtime.threads);
  } else {
    load_prune_state(*model, run_dir);
    quant_before_load(*model, spec.quant);
    load_model(*model, ckpt.string());
    model->eval();
    quant_after_load(*model, spec.quant, run_dir);  // QAT runs: fake quantisation; int8 exports: int8 Linear layers
  }
  model->eval();
  return model;
}

RunSpec read_run_spec(const std::string& run_dir, int threads, const std::map<std::string, std::string>& overrides) {
  const fs::path dir(run_dir);
  if (!fs::is_directory(dir)) throw std::runtime_error("run directory '" + run_dir + "' not found");
  Config config;
  config.load_yaml_file((dir / "config.yaml").string());
  for (const auto& [key, value] : overrides) config.set(key, value, "command line");
  if (threads >= 0) config.set("threads", std::to_string(threads), "command line");
  return parse_run_spec(config, /*training=*/false);
}

LoadedRun load_run(const std::string& run_dir, int threads) { return load_run(read_run_spec(run_dir, threads), run_dir); }

LoadedRun load_run(RunSpec spec, const std::string& run_dir) {
  LoadedRun run;
  run.spec = std::move(spec);
  run.threads = apply_runtime(run.spec.runtime);
  run.spec.runtime.threads = run.threads;
  run.task = make_task(run.spec.task, run_dir);
  run.model = load_run_model(run.spec, run.task->info(), run_dir);
  return run;
}

nlohmann::json eval_run(const std::string& run_dir, const RunOptions&,
                        const std::map<std::string, std::string>& overrides) {
  LoadedRun run = load_run(read_run_spec(run_dir, -1, overrides), run_dir);
  const RunSpec& spec = run.spec;
  nlohmann::json metrics = evaluate(*run.model, *run.task, Part::Test, spec.trainer.eval_batch_size, "test");
  nlohmann::json result = {{"run", run_dir}, {"task", run.task->info().name}, {"model", spec.model.name},
                           {"metrics", metrics}, {"threads", run.threads}};
  if (!overrides.empty()) result["overrides"] = overrides;
  if (!spec.model.is_estimator() && (spec.quant.qat || spec.quant.int8))
    result["quant"] = quant_summary(*run.model, spec.quant);
  const fs::path summary_path = fs::path(run_dir) / "summary.json";
  if (overrides.empty() && fs::exists(summary_path)) {
    const nlohmann::json summary = read_json_file(summary_path);
    if (summary.contains("metrics")) {
      bool identical = true;
      for (auto& [k, v] : metrics.items())
        if (summary["metrics"].contains(k) && summary["metrics"][k].get<double>() != v.get<double>()) identical = false;
      result["matches_summary"] = identical;
    }
  }
  return result;
}

}  // namespace cerebra
