// One run of the tabular task end to end, and its re-evaluation from the run directory.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <chrono>

#include <fmt/core.h>

#include "cerebra/models/baselines.h"
#include "cerebra/core/io.h"
#include "cerebra/train/compute_objective.h"
#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/pruning.h"
#include "cerebra/models/cerebra_layer.h"
#include "cerebra/models/quant.h"
#include "cerebra/core/runtime.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/data/tabular.h"
#include "cerebra/train/recipe.h"
#include "cerebra/train/seq_run.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/train.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {

struct Prepared {
  TabularSource source;
  Split split;
  TabularData data;
};

Prepared prepare(const TaskSpec& task) {
  Prepared p;
  p.source = open_tabular(resolve_table(task), task.max_rows);
  p.split = make_split(static_cast<int64_t>(p.source.rows.size()), task.val_fraction, task.test_fraction, task.seed);
  p.data = encode_tabular(p.source, p.split.train);
  return p;
}

torch::Tensor rows_tensor(const std::vector<int64_t>& rows) { return torch::tensor(rows, torch::kInt64); }

Batch tabular_batch(const TabularData& d, const std::vector<int64_t>& rows) {
  auto idx = rows_tensor(rows);
  Batch b;
  b.num = d.num.index_select(0, idx);
  b.cat = d.cat.index_select(0, idx);
  b.y = d.y.index_select(0, idx);
  return b;
}

InputSchema schema_of(const TabularData& d) {
  InputSchema s;
  s.n_numeric = static_cast<int64_t>(d.numeric_names.size());
  s.cardinalities = d.cardinalities;
  s.n_outputs = 1;
  return s;
}

// Regression metrics of predictions in standardised units for `rows`.
nlohmann::json regression_metrics(const TabularData& d, const torch::Tensor& pred_std, const std::vector<int64_t>& rows,
                                  const std::string& prefix) {
  auto idx = rows_tensor(rows);
  auto pt = d.to_transformed(pred_std.reshape({-1}));
  auto yt = d.to_transformed(d.y.index_select(0, idx));
  auto pr = d.to_raw(pred_std.reshape({-1}));
  auto yr = d.y_raw.index_select(0, idx);
  const double rmse = (pt - yt).pow(2).mean().sqrt().item<double>();
  const double var = (yt - yt.mean()).pow(2).mean().item<double>();
  return {{prefix + "_rmse", rmse},
          {prefix + "_r2", 1.0 - rmse * rmse / var},
          {prefix + "_rmse_raw", (pr - yr).pow(2).mean().sqrt().item<double>()},
          {prefix + "_mae_raw", (pr - yr).abs().mean().item<double>()}};
}

std::vector<int64_t> first_rows(const std::vector<int64_t>& rows, size_t k) {
  return std::vector<int64_t>(rows.begin(), rows.begin() + std::min(rows.size(), k));
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

void write_text(const fs::path& path, const std::string& text) { write_text_file(path, text); }
nlohmann::json read_json(const fs::path& path) { return read_json_file(path); }

std::vector<int64_t> json_rows(const nlohmann::json& j, const char* key, const fs::path& path) {
  if (!j.contains(key) || !j[key].is_array()) throw std::runtime_error(path.string() + ": missing array '" + key + "'");
  return j[key].get<std::vector<int64_t>>();
}

// The trained model of any kind, able to predict standardised targets for rows of the data.
struct Fitted {
  std::string kind;
  std::shared_ptr<Model> net;
  torch::Tensor ols_beta;
  std::unique_ptr<XgbRegressor> xgb;
  torch::Tensor design;  // one-hot design matrix for ols / xgboost

  torch::Tensor predict_rows(const TabularData& d, const std::vector<int64_t>& rows, int64_t batch) {
    if (net) return cerebra::predict(*net, rows, batch, [&](const std::vector<int64_t>& r) { return tabular_batch(d, r); })
        .reshape({-1});
    auto X = design.index_select(0, rows_tensor(rows));
    return kind == "ols" ? ols_predict(X, ols_beta).to(torch::kFloat32) : xgb->predict(X);
  }
};

const char* checkpoint_name(const std::string& kind) {
  return kind == "xgboost" ? "model.xgb.json" : "model.pt";
}

}  // namespace

nlohmann::json train_run(const RunSpec& spec, const std::string& out_dir, const RunOptions& options) {
  if (is_seq_task(spec.task.name)) return seq_train_run(spec, out_dir, options);
  const Config& config = spec.config;
  const int threads = apply_runtime(spec.runtime);
  const std::string kind = spec.model.name;
  Prepared p = prepare(spec.task);
  const TabularData& d = p.data;
  fs::create_directories(out_dir);
  const fs::path out(out_dir);
  write_text(out / "config.yaml", config.to_yaml());
  write_text(out / "split.json", split_to_json(p.split).dump() + "\n");
  if (!options.quiet)
    std::cerr << fmt::format("[{}] {} rows ({} train, {} val, {} test), {} numeric + {} categorical features, "
                             "threads={}\n",
                             kind, p.source.rows.size(), p.split.train.size(), p.split.val.size(), p.split.test.size(),
                             d.numeric_names.size(), d.categorical_names.size(), threads);
  if (p.source.dropped_rows > 0 && !options.quiet)
    std::cerr << fmt::format("[{}] warning: {} rows without a target were skipped\n", kind, p.source.dropped_rows);

  reset_peak_tensor_bytes();
  reset_peak_rss();
  torch::manual_seed(static_cast<int64_t>(spec.trainer.seed));

  Fitted fit;
  fit.kind = kind;
  std::unique_ptr<ComputeObjective> compute;
  std::vector<double> epoch_seconds;
  double examples_per_second = 0;
  nlohmann::json training;
  double analytic = std::nan("");
  int64_t params = 0;
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  if (kind == "ols" || kind == "xgboost") {
    fit.design = one_hot_design(d);
    auto tr = rows_tensor(p.split.train);
    auto Xtr = fit.design.index_select(0, tr);
    auto ytr = d.y.index_select(0, tr);
    if (kind == "ols") {
      fit.ols_beta = fit_ols(Xtr, ytr);
      params = fit.ols_beta.numel();
      analytic = 2.0 * static_cast<double>(fit.design.size(1));  // one dot product per example
    } else {
      XgbParams xp = spec.model.xgb;
      xp.threads = threads;
      auto va = rows_tensor(p.split.val);
      fit.xgb = std::make_unique<XgbRegressor>();
      fit.xgb->fit(Xtr, ytr, fit.design.index_select(0, va), d.y.index_select(0, va), xp);
      training = {{"rounds_run", fit.xgb->rounds_run()}, {"best_rounds", fit.xgb->best_rounds()}};
    }
    epoch_seconds.push_back(elapsed());
    examples_per_second = static_cast<double>(p.split.train.size()) / std::max(epoch_seconds[0], 1e-9);
  } else {
    fit.net = make_tabular_model(spec.model, schema_of(d));
    params = fit.net->parameter_count();
    analytic = fit.net->flops_per_example();
    TrainerOptions to = spec.trainer;
    to.quiet = options.quiet;
    to.metrics_path = (out / "metrics.jsonl").string();
    TrainerHooks hooks;
    hooks.make_batch = [&](const std::vector<int64_t>& r) { return tabular_batch(d, r); };
    hooks.loss = [](const torch::Tensor& pred, const Batch& b) { return torch::mse_loss(pred.reshape({-1}), b.y); };
    hooks.describe_val = [&](double vl) { return nlohmann::json{{"val_rmse", std::sqrt(vl) * d.y_std}}; };
    hooks.per_example_loss = [](const torch::Tensor& pred, const Batch& b) {
      return (pred.reshape({-1}) - b.y).pow(2);
    };
    const ComputeSchedule& schedule = spec.compute;
    compute = std::make_unique<ComputeObjective>(*fit.net, schedule);
    if (compute->active()) {
      const int64_t n_tokens = fit.net->tokens_per_example();
      const auto* cerebra = std::any_cast<CerebraOptions>(&spec.model.backbone.mixer_options.own);
      if (cerebra && cerebra->mode == RoutingMode::kTopK && cerebra->topk >= n_tokens && !options.quiet)
        std::cerr << fmt::format("[{}] note: topk {} >= the {} tokens of an example ({} features + CLS): every token "
                                 "takes the full path; routing cannot save compute on this task at this k\n",
                                 kind, cerebra->topk, n_tokens, n_tokens - 1);
      hooks.on_epoch_begin = [&](int64_t epoch) { compute->begin_epoch(epoch); };
      hooks.objective = [&](const torch::Tensor& loss, const Batch& b) { return compute->objective(loss, b.size()); };
      hooks.epoch_report = [&]() {
        nlohmann::json r = compute->epoch_summary();
        auto rows = first_rows(p.split.val, 512);
        if (!rows.empty()) {
          fit.predict_rows(d, rows, static_cast<int64_t>(rows.size()));
          const auto B = static_cast<int64_t>(rows.size());
          r["val_realised_flops_per_example"] = compute->realised_per_example(B);
          r["val_expected_flops_per_example"] = compute->expected_per_example(B);
          r["val_relative_flops"] = compute->realised_per_example(B) / compute->dense_flops_per_example();
          r["layers"] = compute->layer_stats();
        }
        return r;
      };
      hooks.first_selectable_epoch =
          std::min<int64_t>(schedule.warm_epochs + schedule.ramp_epochs + 1, spec.trainer.epochs);
    }
    // Ĉ of an example relative to the dense model: every example of a tabular task has the same tokens, so the
    // estimate is the model's current cost per example, the same for all rows (γ then has no effect).
    hooks.example_cost = [&](const std::vector<int64_t>& r) {
      const double dense_f = compute ? compute->dense_flops_per_example() : fit.net->flops_per_example();
      return std::vector<double>(r.size(), fit.net->flops_per_example() / dense_f);
    };
    std::unique_ptr<Pruner> pruner = attach_pruning(hooks, *fit.net, spec.prune, spec.trainer.epochs, [&] {
      if (compute) compute->refresh_static_flops();
    });
    attach_qat(hooks, *fit.net, spec.quant);  // QAT from qat_start_epoch (no-op unless qat: true)
    TrainResult tr = train_model(*fit.net, p.split.train, p.split.val, to, hooks);
    epoch_seconds = tr.epoch_seconds;
    examples_per_second = tr.examples_per_second;
    training = {{"epochs_run", tr.epochs_run}, {"best_epoch", tr.best_epoch}, {"best_val_loss", tr.best_val_loss}};
    if (pruner) {
      training["pruning"] = pruner->report();
      params = fit.net->parameter_count();  // of the pruned model
      analytic = fit.net->flops_per_example();
    }
  }
  if (kind == "ols" || kind == "xgboost") {
    // One line per fit, so metrics.jsonl exists for every model.
    write_text(out / "metrics.jsonl", nlohmann::json{{"epoch", 1}, {"epoch_seconds", epoch_seconds[0]}}.dump() + "\n");
  }

  // Measured FLOPs: the matmul-class ops that ran while predicting a batch of test rows.
  nlohmann::json measured = nullptr, realised = nullptr, expected = nullptr, dense = nullptr;
  if (kind != "xgboost") {
    auto rows = first_rows(p.split.test, 256);
    const auto B = static_cast<int64_t>(rows.size());
    {
      FlopCounter counter;
      fit.predict_rows(d, rows, B);
      measured = counter.total() / static_cast<double>(B);
    }
    realised = compute ? compute->realised_per_example(B) : analytic;
    expected = compute ? compute->expected_per_example(B) : analytic;
    dense = compute ? compute->dense_flops_per_example() : analytic;
  }

  const int64_t eval_batch = spec.trainer.eval_batch_size;
  nlohmann::json metrics = regression_metrics(d, fit.predict_rows(d, p.split.test, eval_batch), p.split.test, "test");
  metrics.update(regression_metrics(d, fit.predict_rows(d, p.split.val, eval_batch), p.split.val, "val"));

  const fs::path ckpt = out / checkpoint_name(kind);
  if (fit.net) {
    save_model(*fit.net, ckpt.string());
    if (training.contains("pruning"))  // a pruned run: its shapes go beside the checkpoint
      save_prune_state(*fit.net, *make_tabular_model(spec.model, schema_of(d)), (out / kPruneStateFile).string());
  }
  if (kind == "ols") torch::save(fit.ols_beta, ckpt.string());
  if (fit.xgb) fit.xgb->save(ckpt.string());

  nlohmann::json summary = {
      {"task", p.source.spec.name},
      {"model", kind},
      {"params", params},
      {"metrics", metrics},
      {"target", {{"column", p.source.spec.target}, {"transform", d.transform}, {"mean", d.y_mean}, {"std", d.y_std}}},
      {"data", {{"path", p.source.spec.path}, {"fnv1a64", fmt::format("{:016x}", p.source.checksum)},
                {"rows", p.source.rows.size()}, {"train", p.split.train.size()}, {"val", p.split.val.size()},
                {"test", p.split.test.size()}}},
      {"flops", {{"analytic_forward_per_example", std::isnan(analytic) ? nlohmann::json(nullptr) : nlohmann::json(analytic)},
                 {"measured_forward_per_example", measured},
                 {"realised_per_example", realised},
                 {"expected_per_example", expected},
                 {"dense_transformer_per_example", dense},
                 {"convention", "2 per multiply-add of matmul-class ops (mm, addmm, bmm, mv, convolution, kernels)"}}},
      {"time", {{"epoch_seconds_median", median(epoch_seconds)}, {"epochs", epoch_seconds.size()},
                {"train_seconds_total", std::accumulate(epoch_seconds.begin(), epoch_seconds.end(), 0.0)},
                {"examples_per_second", examples_per_second}}},
      {"memory", {{"peak_tensor_bytes", peak_tensor_bytes()}, {"peak_rss_bytes", peak_rss_bytes()}}},
      {"training", training},
      {"threads", threads},
      {"machine", machine_description()},
      {"blas", loaded_blas_library()},
      {"torch_version", torch_version()},
      {"checkpoint", checkpoint_name(kind)},
  };
  if (fit.net && spec.quant.qat) summary["quant"] = quant_summary(*fit.net, spec.quant);
  // Written last and atomically (rename): a summary.json that exists is complete, so a sweep can trust it.
  write_text_file_atomic(out / "summary.json", summary.dump(2) + "\n");
  return summary;
}

nlohmann::json eval_run(const std::string& run_dir, const RunOptions& options) {
  const fs::path dir(run_dir);
  if (!fs::is_directory(dir)) throw std::runtime_error("run directory '" + run_dir + "' not found");
  Config config;
  config.load_yaml_file((dir / "config.yaml").string());
  const RunSpec spec = parse_run_spec(config, /*training=*/false);
  if (is_seq_task(spec.task.name)) return seq_eval_run(spec, run_dir, options);
  const int threads = apply_runtime(spec.runtime);
  const std::string kind = spec.model.name;

  const nlohmann::json split_json = read_json(dir / "split.json");
  Split split{json_rows(split_json, "train", dir / "split.json"), json_rows(split_json, "val", dir / "split.json"),
              json_rows(split_json, "test", dir / "split.json")};
  TabularSource source = open_tabular(resolve_table(spec.task), spec.task.max_rows);
  nlohmann::json summary;
  if (fs::exists(dir / "summary.json")) {
    summary = read_json(dir / "summary.json");
    const std::string want = summary["data"]["fnv1a64"].get<std::string>();
    const std::string have = fmt::format("{:016x}", source.checksum);
    if (want != have)
      std::cerr << fmt::format("warning: {} has changed since the run (checksum {} != {}): metrics will differ\n",
                               source.spec.path, have, want);
  }
  for (const auto* part : {&split.train, &split.val, &split.test})
    for (auto r : *part)
      if (r < 0 || r >= static_cast<int64_t>(source.rows.size()))
        throw std::runtime_error((dir / "split.json").string() + ": row " + std::to_string(r) + " is outside the " +
                                 std::to_string(source.rows.size()) + " rows of " + source.spec.path);
  TabularData d = encode_tabular(source, split.train);

  Fitted fit;
  fit.kind = kind;
  const fs::path ckpt = dir / checkpoint_name(kind);
  if (!fs::exists(ckpt)) throw std::runtime_error("checkpoint " + ckpt.string() + " not found");
  if (kind == "ols" || kind == "xgboost") {
    fit.design = one_hot_design(d);
    if (kind == "ols") {
      torch::load(fit.ols_beta, ckpt.string());
    } else {
      fit.xgb = std::make_unique<XgbRegressor>();
      fit.xgb->load(ckpt.string(), threads);
    }
  } else {
    fit.net = make_tabular_model(spec.model, schema_of(d));
    load_prune_state(*fit.net, run_dir);
    quant_before_load(*fit.net, spec.quant);
    load_model(*fit.net, ckpt.string());
    fit.net->eval();
    quant_after_load(*fit.net, spec.quant, run_dir);  // QAT runs: fake quantisation; int8 exports: int8 Linear layers
  }
  nlohmann::json metrics =
      regression_metrics(d, fit.predict_rows(d, split.test, spec.trainer.eval_batch_size), split.test, "test");
  nlohmann::json result = {{"run", run_dir}, {"model", kind}, {"metrics", metrics}, {"threads", threads}};
  if (fit.net && (spec.quant.qat || spec.quant.int8)) result["quant"] = quant_summary(*fit.net, spec.quant);
  if (summary.contains("metrics")) {
    bool identical = true;
    for (auto& [k, v] : metrics.items())
      if (summary["metrics"].contains(k) && summary["metrics"][k].get<double>() != v.get<double>()) identical = false;
    result["matches_summary"] = identical;
  }
  return result;
}

}  // namespace cerebra
