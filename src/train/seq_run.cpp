// The sequence model for token tasks, and one run of a sequence task end to end (train, measure, write the run
// directory) plus its re-evaluation. The loop is train_model (train.h); cerebra's compute penalty and realised FLOPs
// come from ComputeObjective exactly as on the tabular task.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>

#include <fmt/core.h>

#include "cerebra/train/compute_objective.h"
#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/core/io.h"
#include "cerebra/models/pruning.h"
#include "cerebra/models/quant.h"
#include "cerebra/core/runtime.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/models/cerebra_layer.h"
#include "cerebra/train/recipe.h"
#include "cerebra/train/seq_run.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/train.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {

// Fixed sinusoidal positions (Vaswani et al.): no parameters, so every mixer gets the same positional signal.
torch::Tensor sinusoidal_positions(int64_t n, int64_t d) {
  auto pos = torch::arange(n, torch::kFloat32).unsqueeze(1);                  // (n, 1)
  auto i = torch::arange(0, d, 2, torch::kFloat32);                           // (ceil(d/2),)
  auto angle = pos * torch::exp(i * (-std::log(10000.0) / static_cast<double>(d)));  // (n, ceil(d/2))
  auto pe = torch::zeros({n, d});
  pe.slice(1, 0, d, 2).copy_(torch::sin(angle));
  pe.slice(1, 1, d, 2).copy_(torch::cos(angle).slice(1, 0, d / 2));
  return pe;
}

class SeqModel final : public Model {
 public:
  SeqModel(const SeqTaskInfo& info, const BackboneOptions& bo) : info_(info), d_(bo.mixer_options.d_model) {
    embed_ = register_module("embed", torch::nn::Embedding(info.vocab, d_));
    backbone_ = register_module("backbone", Backbone(bo));
    head_ = register_module("head", torch::nn::Linear(d_, info.n_classes));
  }

  // -> (B, n, n_classes) for token-level heads, (B, n_classes) for sequence classification.
  torch::Tensor forward(const Batch& b) override {
    TORCH_CHECK(b.tokens.defined() && b.tokens.dim() == 2, "sequence model: tokens must be (B, n)");
    const int64_t n = b.tokens.size(1);
    if (pe_.size(0) < n) pe_ = sinusoidal_positions(std::max(n, info_.n), d_);
    auto x = embed_->forward(b.tokens) + pe_.slice(0, 0, n);
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
      return cerebra::linear(head_, pooled);
    }
    return cerebra::linear(head_, h);
  }

  double flops_per_example() const override {
    const double head = 2.0 * static_cast<double>(d_ * info_.n_classes);
    const double n = static_cast<double>(info_.n);
    return backbone_->flops(info_.n) + (info_.head == HeadKind::SequenceClassification ? head : head * n);
  }
  std::vector<std::shared_ptr<SequenceMixer>> mixers() const override { return backbone_->mixers(); }
  int64_t tokens_per_example() const override { return info_.n; }
  BackboneImpl* backbone() override { return backbone_.get(); }

 private:
  SeqTaskInfo info_;
  int64_t d_;
  torch::Tensor pe_ = torch::zeros({0, 0});
  torch::nn::Embedding embed_{nullptr};
  Backbone backbone_{nullptr};
  torch::nn::Linear head_{nullptr};
};


constexpr int kSplitShift = 40;  // trainer rows encode (split << 40) | index
std::vector<int64_t> split_rows(SeqSplit s, int64_t count) {
  std::vector<int64_t> r(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) r[i] = (static_cast<int64_t>(s) << kSplitShift) | i;
  return r;
}
Batch batch_of(const SeqTask& task, const std::vector<int64_t>& rows) {
  const auto split = static_cast<SeqSplit>(rows.front() >> kSplitShift);
  std::vector<int64_t> idx(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) idx[i] = rows[i] & ((int64_t{1} << kSplitShift) - 1);
  return task.batch(split, idx);
}

torch::Tensor task_loss(const SeqTaskInfo& info, const torch::Tensor& pred, const Batch& b) {
  if (info.head == HeadKind::SequenceClassification) return torch::cross_entropy_loss(pred, b.y);
  return torch::cross_entropy_loss(pred.reshape({-1, pred.size(-1)}), b.y.reshape({-1}), {},
                                   at::Reduction::Mean, kIgnore);
}

// Test (or validation) metrics over a whole split, batch by batch.
nlohmann::json evaluate(Model& model, const SeqTask& task, SeqSplit split, int64_t batch_size,
                        const std::string& prefix) {
  const SeqTaskInfo& info = task.info();
  torch::NoGradGuard g;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t N = task.size(split);
  double loss_sum = 0, correct = 0, counted = 0, exact = 0;
  std::vector<int64_t> tp(static_cast<size_t>(info.n_classes)), fp(tp.size()), fn(tp.size());
  for (int64_t lo = 0; lo < N; lo += batch_size) {
    std::vector<int64_t> rows(static_cast<size_t>(std::min(batch_size, N - lo)));
    std::iota(rows.begin(), rows.end(), lo);
    Batch b = task.batch(split, rows);
    auto pred = model.forward(b);
    if (info.head == HeadKind::SequenceClassification) {
      loss_sum += torch::cross_entropy_loss(pred, b.y, {}, at::Reduction::Sum).item<double>();
      auto am = pred.argmax(-1);
      auto* a = am.data_ptr<int64_t>();
      auto* y = b.y.data_ptr<int64_t>();
      for (int64_t i = 0; i < am.size(0); ++i) {
        if (a[i] == y[i]) ++tp[a[i]], ++correct;
        else ++fp[a[i]], ++fn[y[i]];
      }
      counted += static_cast<double>(am.size(0));
    } else {
      auto flat = pred.reshape({-1, pred.size(-1)});
      auto y = b.y.reshape({-1});
      loss_sum += torch::cross_entropy_loss(flat, y, {}, at::Reduction::Sum, kIgnore).item<double>();
      auto valid = b.y.ne(kIgnore);
      auto right = pred.argmax(-1).eq(b.y).logical_and(valid);
      correct += right.sum().item<double>();
      counted += valid.sum().item<double>();
      exact += right.sum(1).eq(valid.sum(1)).sum().item<double>();
    }
  }
  model.train(was_training);
  nlohmann::json m;
  const double loss = loss_sum / std::max(counted, 1.0);
  m[prefix + "_loss"] = loss;
  if (info.head == HeadKind::CausalLM) {
    m[prefix + "_bits_per_char"] = loss / std::log(2.0);
    m[prefix + "_accuracy"] = correct / std::max(counted, 1.0);
    m[prefix + "_chars"] = counted;
  } else {
    m[prefix + "_accuracy"] = correct / std::max(counted, 1.0);
  }
  if (info.head == HeadKind::TokenClassification) {
    m[prefix + "_exact_match"] = exact / static_cast<double>(std::max<int64_t>(N, 1));
    m[prefix + "_answers"] = counted;
  }
  if (info.head == HeadKind::SequenceClassification) {
    // Macro-F1 over the classes present in the labels or the predictions.
    double f1_sum = 0;
    int classes = 0;
    for (size_t c = 0; c < tp.size(); ++c) {
      if (tp[c] + fp[c] + fn[c] == 0) continue;
      f1_sum += 2.0 * tp[c] / static_cast<double>(2 * tp[c] + fp[c] + fn[c]);
      ++classes;
    }
    m[prefix + "_macro_f1"] = classes ? f1_sum / classes : 0.0;
    m[prefix + "_examples"] = counted;
  }
  return m;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// Unreduced loss per example (B,): the mean over its answer positions for token-level heads.
torch::Tensor per_example_task_loss(const SeqTaskInfo& info, const torch::Tensor& pred, const Batch& b) {
  if (info.head == HeadKind::SequenceClassification)
    return torch::cross_entropy_loss(pred, b.y, {}, at::Reduction::None);
  auto valid = b.y.ne(kIgnore).to(pred.scalar_type());
  auto per_token = torch::cross_entropy_loss(pred.reshape({-1, pred.size(-1)}), b.y.reshape({-1}), {},
                                             at::Reduction::None, kIgnore).reshape(b.y.sizes());
  return (per_token * valid).sum(1) / valid.sum(1).clamp_min(1.0);
}

}  // namespace

std::vector<std::string> seq_model_names() {
  std::vector<std::string> names{"transformer"};
  for (const auto& m : mixer_names())
    if (m != "attention") names.push_back(m);
  return names;
}

std::shared_ptr<Model> make_seq_model(const ModelSpec& spec, const SeqTaskInfo& info) {
  const std::string& name = spec.name;
  const auto mixers = mixer_names();
  if (std::find(mixers.begin(), mixers.end(), mixer_for_model(name)) == mixers.end()) {
    std::string known;
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
  return std::make_shared<SeqModel>(info, bo);
}

double estimate_train_bytes(const RunSpec& spec, const SeqTaskInfo& info, int64_t params) {
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
  const double logits = (info.head == HeadKind::SequenceClassification ? 1.0 : n) * info.n_classes * 4.0;
  train += scores_train + B * logits * 3.0;
  const double eval = Be * n * per_token * 4.0 / L + scores_eval + Be * logits;
  return std::max(train, eval) + static_cast<double>(params) * 4.0 * 4.0;
}

nlohmann::json seq_train_run(const RunSpec& spec, const std::string& out_dir, const RunOptions& options) {
  const Config& config = spec.config;
  const int threads = apply_runtime(spec.runtime);
  const std::string& kind = spec.model.name;
  auto task = make_seq_task(spec.task);
  const SeqTaskInfo& info = task->info();
  fs::create_directories(out_dir);
  const fs::path out(out_dir);
  write_text_file(out / "config.yaml", config.to_yaml());

  reset_peak_tensor_bytes();
  reset_peak_rss();
  torch::manual_seed(static_cast<int64_t>(spec.trainer.seed));
  auto net = make_seq_model(spec.model, info);
  int64_t params = net->parameter_count();
  double analytic = net->flops_per_example();

  TrainerOptions to = spec.trainer;
  to.quiet = options.quiet;
  to.metrics_path = (out / "metrics.jsonl").string();
  int64_t n_train = task->size(SeqSplit::Train);
  const int64_t steps = spec.trainer.steps;
  if (steps > 0) {  // a step budget: one pass over steps * batch_size examples of the pool (cycled if larger)
    const int64_t per_epoch = (n_train + to.batch_size - 1) / to.batch_size;
    if (steps <= per_epoch) {
      n_train = std::min(n_train, steps * to.batch_size);
      to.epochs = 1;
    } else {
      to.epochs = (steps + per_epoch - 1) / per_epoch;
    }
    to.warmup_epochs = std::min(to.warmup_epochs, 0.1 * static_cast<double>(to.epochs));
  }
  if (!options.quiet)
    std::cerr << fmt::format("[{}] task {} ({}): n={}, vocab={}, {} train / {} val / {} test examples, {} params, "
                             "{} epoch(s), threads={}\n",
                             kind, info.name, head_kind_name(info.head), info.n, info.vocab, n_train,
                             task->size(SeqSplit::Val), task->size(SeqSplit::Test), params, to.epochs, threads);

  TrainerHooks hooks;
  hooks.make_batch = [&](const std::vector<int64_t>& r) { return batch_of(*task, r); };
  hooks.loss = [&](const torch::Tensor& pred, const Batch& b) { return task_loss(info, pred, b); };
  if (info.head == HeadKind::CausalLM)
    hooks.describe_val = [](double vl) { return nlohmann::json{{"val_bits_per_char", vl / std::log(2.0)}}; };
  const std::vector<int64_t> val_rows = split_rows(SeqSplit::Val, task->size(SeqSplit::Val));
  const ComputeSchedule& schedule = spec.compute;
  auto compute = std::make_unique<ComputeObjective>(*net, schedule);
  auto probe = [&](SeqSplit split) {  // one no-grad forward of up to 64 examples; returns its batch size
    const int64_t B = std::min<int64_t>({64, spec.trainer.eval_batch_size, task->size(split)});
    std::vector<int64_t> rows(static_cast<size_t>(B));
    std::iota(rows.begin(), rows.end(), 0);
    torch::NoGradGuard g;
    const bool was = net->is_training();
    net->eval();
    net->forward(task->batch(split, rows));
    net->train(was);
    return B;
  };
  if (compute->active()) {
    hooks.on_epoch_begin = [&](int64_t epoch) { compute->begin_epoch(epoch); };
    hooks.objective = [&](const torch::Tensor& loss, const Batch& b) { return compute->objective(loss, b.size()); };
    hooks.epoch_report = [&]() {
      nlohmann::json r = compute->epoch_summary();
      const int64_t B = probe(SeqSplit::Val);
      r["val_realised_flops_per_example"] = compute->realised_per_example(B);
      r["val_expected_flops_per_example"] = compute->expected_per_example(B);
      r["val_relative_flops"] = compute->realised_per_example(B) / compute->dense_flops_per_example();
      r["layers"] = compute->layer_stats();
      return r;
    };
    hooks.first_selectable_epoch = std::min<int64_t>(schedule.warm_epochs + schedule.ramp_epochs + 1, to.epochs);
  }
  // The rest of the recipe, as on the tabular task: compute-aware sampler, structured pruning, QAT.
  hooks.per_example_loss = [&](const torch::Tensor& pred, const Batch& b) {
    return per_example_task_loss(info, pred, b);
  };
  // Ĉ relative to the dense model: the model's cost at length n, the same for every example (padding is not
  // executed work that the sampler could save, so shorter texts are not charged less).
  hooks.example_cost = [&](const std::vector<int64_t>& r) {
    return std::vector<double>(r.size(), net->flops_per_example() / compute->dense_flops_per_example());
  };
  std::unique_ptr<Pruner> pruner =
      attach_pruning(hooks, *net, spec.prune, to.epochs, [&] { compute->refresh_static_flops(); });
  attach_qat(hooks, *net, spec.quant);  // QAT from qat_start_epoch (no-op unless qat: true)
  TrainResult tr = train_model(*net, split_rows(SeqSplit::Train, n_train), val_rows, to, hooks);
  nlohmann::json training_extra = nlohmann::json::object();
  if (pruner) {
    training_extra["pruning"] = pruner->report();
    params = net->parameter_count();  // of the pruned model
    analytic = net->flops_per_example();
  }

  // Measured FLOPs: the matmul-class ops of one forward over test examples; realised/expected from the mixers.
  double measured = 0, realised = analytic, expected = analytic;
  {
    FlopCounter counter;
    const int64_t B = probe(SeqSplit::Test);
    measured = counter.total() / static_cast<double>(B);
    if (compute->active()) {
      realised = compute->realised_per_example(B);
      expected = compute->expected_per_example(B);
    }
  }
  const double dense = compute->active() ? compute->dense_flops_per_example() : analytic;
  const int64_t eval_batch = spec.trainer.eval_batch_size;
  nlohmann::json metrics = evaluate(*net, *task, SeqSplit::Test, eval_batch, "test");
  metrics.update(evaluate(*net, *task, SeqSplit::Val, eval_batch, "val"));
  save_model(*net, (out / "model.pt").string());
  if (pruner) save_prune_state(*net, *make_seq_model(spec.model, info), (out / kPruneStateFile).string());

  const double n = static_cast<double>(info.n);
  const double train_total = std::accumulate(tr.epoch_seconds.begin(), tr.epoch_seconds.end(), 0.0);
  nlohmann::json summary = {
      {"task", info.name},
      {"model", kind},
      {"params", params},
      {"d_model", spec.model.backbone.mixer_options.d_model},
      {"metrics", metrics},
      {"primary_metric", info.metric},
      {"higher_is_better", info.higher_is_better},
      {"task_info", {{"head", head_kind_name(info.head)}, {"n", info.n}, {"vocab", info.vocab},
                     {"n_classes", info.n_classes}, {"causal", info.needs_causal}}},
      {"data", task->describe()},
      {"flops", {{"analytic_forward_per_example", analytic},
                 {"measured_forward_per_example", measured},
                 {"realised_per_example", realised},
                 {"expected_per_example", expected},
                 {"dense_transformer_per_example", dense},
                 {"analytic_forward_per_token", analytic / n},
                 {"measured_forward_per_token", measured / n},
                 {"realised_per_token", realised / n},
                 {"expected_per_token", expected / n},
                 {"tokens_per_example", info.n},
                 {"convention", "2 per multiply-add of matmul-class ops (mm, addmm, bmm, mv, convolution, kernels); "
                                "per token = per example / n (n = max_len for variable-length text; measured runs "
                                "on test batches padded to their longest example)"}}},
      {"time", {{"epoch_seconds_median", median_of(tr.epoch_seconds)}, {"epochs", tr.epoch_seconds.size()},
                {"train_seconds_total", train_total}, {"examples_per_second", tr.examples_per_second},
                {"tokens_per_second", tr.examples_per_second * n}}},
      {"memory", {{"peak_tensor_bytes", peak_tensor_bytes()}, {"peak_rss_bytes", peak_rss_bytes()}}},
      {"training", {{"epochs_run", tr.epochs_run}, {"best_epoch", tr.best_epoch}, {"best_val_loss", tr.best_val_loss},
                    {"train_examples", n_train}, {"steps", tr.epochs_run * ((n_train + to.batch_size - 1) / to.batch_size)}}},
      {"threads", threads},
      {"machine", machine_description()},
      {"blas", loaded_blas_library()},
      {"torch_version", torch_version()},
      {"checkpoint", "model.pt"},
  };
  summary["training"].update(training_extra);
  if (spec.quant.qat) summary["quant"] = quant_summary(*net, spec.quant);
  write_text_file(out / "summary.json", summary.dump(2) + "\n");
  return summary;
}

nlohmann::json seq_eval_run(const RunSpec& spec, const std::string& run_dir, const RunOptions& options) {
  const fs::path dir(run_dir);
  const int threads = apply_runtime(spec.runtime);
  auto task = make_seq_task(spec.task);
  auto net = make_seq_model(spec.model, task->info());
  const fs::path ckpt = dir / "model.pt";
  if (!fs::exists(ckpt)) throw std::runtime_error("checkpoint " + ckpt.string() + " not found");
  load_prune_state(*net, run_dir);
  quant_before_load(*net, spec.quant);
  load_model(*net, ckpt.string());
  net->eval();
  quant_after_load(*net, spec.quant, run_dir);  // QAT runs evaluate with fake quantisation
  nlohmann::json metrics = evaluate(*net, *task, SeqSplit::Test, spec.trainer.eval_batch_size, "test");
  nlohmann::json result = {{"run", run_dir}, {"task", task->info().name}, {"model", spec.model.name},
                           {"metrics", metrics}, {"threads", threads}};
  if (spec.quant.qat || spec.quant.int8) result["quant"] = quant_summary(*net, spec.quant);
  if (fs::exists(dir / "summary.json")) {
    std::ifstream f(dir / "summary.json");
    nlohmann::json summary = nlohmann::json::parse(f, nullptr, false);
    if (!summary.is_discarded() && summary.contains("metrics")) {
      bool identical = true;
      for (auto& [k, v] : metrics.items())
        if (summary["metrics"].contains(k) && summary["metrics"][k].get<double>() != v.get<double>()) identical = false;
      result["matches_summary"] = identical;
    }
  }
  return result;
}

}  // namespace cerebra
