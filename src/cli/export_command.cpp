// `cerebra export --int8`: see include/cerebra/export_command.h.
#include "cerebra/cli/export_command.h"
#include "cerebra/cli/command.h"
#include "cerebra/core/io.h"

#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>

#include "cerebra/core/config.h"
#include "cerebra/models/pruning.h"
#include "cerebra/train/spec.h"
#include "cerebra/models/models.h"
#include "cerebra/models/quant.h"
#include "cerebra/core/op_profiler.h"
#include "cerebra/core/runtime.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/data/tabular.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {


std::string fixed(const nlohmann::json& v, const char* spec) {
  return v.is_number() ? fmt::format(fmt::runtime(spec), v.get<double>()) : std::string("-");
}

}  // namespace

nlohmann::json export_int8(const Int8ExportOptions& o) {
  const fs::path src(o.run_dir);
  if (!fs::is_directory(src)) throw std::runtime_error("run directory '" + o.run_dir + "' not found");
  if (o.repeats < 1) throw std::runtime_error("--repeats must be >= 1, got " + std::to_string(o.repeats));
  if (o.activations != "dynamic" && o.activations != "static")
    throw std::runtime_error("--activations must be dynamic|static, got '" + o.activations + "'");
  const RunSpec spec = read_run_spec(o.run_dir, o.threads);
  const Config& config = spec.config;
  const std::string& kind = spec.model.name;
  if (spec.model.is_estimator())
    throw std::runtime_error(o.run_dir + ": model '" + kind + "' has no Linear layers to run in int8; export a neural "
                             "run (mlp, transformer, cerebra, lstm, mamba, ...)");
  if (spec.quant.int8)
    throw std::runtime_error(o.run_dir + " is already an int8 export (config int8: true); export the run it came from");
  if (is_seq_task(spec.task.name))
    throw std::runtime_error(o.run_dir + ": task '" + spec.task.name + "' is a sequence task; int8 export "
                             "covers tabular runs so far (sequence runs train and evaluate with QAT: `qat: true`)");
  require_quant_engine(o.engine);  // a clear error before any work
  const fs::path out = o.out_dir.empty() ? fs::path(o.run_dir + "-int8") : fs::path(o.out_dir);
  if (fs::exists(out) && fs::equivalent(out, src)) throw std::runtime_error("--out must differ from --run");
  auto log = [&](const std::string& s) {
    if (!o.quiet) std::cerr << "[export] " << s << "\n";
  };

  // The run's task (with its split) and model, as eval loads them; a second copy stays fp32 for the timing.
  LoadedRun run = load_run(spec, o.run_dir);
  const Task& task = *run.task;
  const int threads = run.threads;
  std::shared_ptr<Model> model = run.model;                                  // becomes the int8 model
  auto reference = load_run_model(run.spec, task.info(), o.run_dir);         // stays plain fp32
  const bool qat = spec.quant.qat;
  const QuantOptions qopts = spec.quant.options();
  const fs::path ckpt = src / checkpoint_name(kind);
  std::vector<int64_t> test_rows(static_cast<size_t>(task.size(Part::Test)));
  std::iota(test_rows.begin(), test_rows.end(), 0);
  if (test_rows.empty()) throw std::runtime_error(o.run_dir + ": empty test split");

  const int64_t batch = o.batch_size > 0 ? o.batch_size : spec.trainer.eval_batch_size;
  auto predict_test = [&] { return predict_part(*model, task, Part::Test, test_rows, batch).reshape({-1}); };
  auto test_metrics = [&] { return evaluate(*model, task, Part::Test, batch, "test"); };
  // fp32 and int8 passes alternate, after one warm-up pass each, so that a change in the machine's load affects both.
  auto time_both = [&]() {
    auto pass = [&](Model& m) {
      auto t0 = std::chrono::steady_clock::now();
      predict_part(m, task, Part::Test, test_rows, batch);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return static_cast<double>(test_rows.size()) / std::max(s, 1e-9);
    };
    pass(*reference);
    pass(*model);
    std::vector<double> fp32, int8;
    for (int r = 0; r < o.repeats; ++r) {
      fp32.push_back(pass(*reference));
      int8.push_back(pass(*model));
      log(fmt::format("timing pass {}/{}: fp32 {:.0f}, int8 {:.0f} examples/s", r + 1, o.repeats, fp32.back(),
                      int8.back()));
    }
    nlohmann::json out;
    out["fp32"] = {{"examples_per_second_median", median(fp32)}, {"examples_per_second", fp32}};
    out["int8"] = {{"examples_per_second_median", median(int8)}, {"examples_per_second", int8}};
    return out;
  };

  log(fmt::format("{} ({}), {} test rows, batch {}, threads={}, engine {}, {} activations", o.run_dir, kind,
                  test_rows.size(), batch, threads, o.engine, o.activations));
  nlohmann::json accuracy, speed;
  set_quant_mode(*model, QuantMode::kFloat);
  const torch::Tensor pred_fp32 = predict_test();
  accuracy["fp32"] = test_metrics();
  if (qat) {
    set_quant_mode(*model, QuantMode::kFakeQuant, qopts);
    accuracy["fake_quant"] = test_metrics();
  }
  bool calibrated = false;
  if (o.activations == "static" && !qat) {
    // Post-training calibration: running min/max of every Linear's input and output over training rows.
    std::vector<int64_t> rows(static_cast<size_t>(std::min<int64_t>(o.calib_rows, task.size(Part::Train))));
    std::iota(rows.begin(), rows.end(), 0);
    prepare_qat(*model);
    set_quant_mode(*model, QuantMode::kObserve);
    predict_part(*model, task, Part::Train, rows, batch);
    calibrated = true;
    log(fmt::format("calibrated activation ranges on {} training rows", rows.size()));
  }
  Int8Options io;
  io.engine = o.engine;
  io.activations = o.activations;
  io.bits = qopts.bits;
  enable_int8(*model, io);
  reset_quant_counters(*model);
  const torch::Tensor pred_int8 = predict_test();
  const nlohmann::json layers = quant_report(*model);  // calls of one pass over the test split
  accuracy["int8"] = test_metrics();
  speed = time_both();
  if (o.breakdown > 0)  // where a pass's time goes, fp32 and int8, profiled apart from the timed passes
    for (const auto& [key, m] : {std::pair<const char*, Model*>{"fp32", reference.get()}, {"int8", model.get()}})
      speed[key]["breakdown"] = breakdown_json(
          profile_ops([&, m = m] { predict_part(*m, task, Part::Test, test_rows, batch); }, o.repeats), "pass");
  const double pred_rmse = (pred_int8 - pred_fp32).pow(2).mean().sqrt().item<double>();

  int64_t n_linear = 0, n_int8 = 0, n_static = 0;
  for (const auto& [name, l] : layers.items()) {
    ++n_linear;
    if (l.value("calls_int8", int64_t{0}) > 0) {
      ++n_int8;
      n_static += l.value("activations", std::string()) == "static";
    }
  }

  // The exported run directory.
  fs::create_directories(out);
  Config out_config = config;
  out_config.set("int8", "true", "export");
  out_config.set("int8_engine", o.engine, "export --engine");
  out_config.set("int8_activations", o.activations, "export --activations");
  {
    std::ofstream f(out / "config.yaml");
    if (!f) throw std::runtime_error("cannot write " + (out / "config.yaml").string());
    f << "# int8 export of " << o.run_dir << " (cerebra export --int8): Linear layers run int8, see summary.json\n"
      << out_config.to_yaml();
  }
  task.save(out.string());  // the split
  fs::copy_file(ckpt, out / "model.pt", fs::copy_options::overwrite_existing);
  if (fs::exists(src / kPruneStateFile))
    fs::copy_file(src / kPruneStateFile, out / kPruneStateFile, fs::copy_options::overwrite_existing);
  else if (fs::exists(out / kPruneStateFile))
    fs::remove(out / kPruneStateFile);
  save_int8_weights(*model, (out / "model_int8.pt").string());
  if (fs::exists(out / "summary.json")) fs::remove(out / "summary.json");

  // Evaluate the export exactly as `cerebra eval --run DIR2` will.
  const nlohmann::json ev = eval_run(out.string(), RunOptions{true});
  const bool reproduced = std::abs(ev["metrics"]["test_rmse"].get<double>() -
                                   accuracy["int8"]["test_rmse"].get<double>()) <= 1e-9;

  const double fp32_eps = speed["fp32"]["examples_per_second_median"].get<double>();
  const double int8_eps = speed["int8"]["examples_per_second_median"].get<double>();
  nlohmann::json report = {
      {"enabled", true},
      {"source_run", o.run_dir},
      {"engine", o.engine},
      {"activations", o.activations},
      {"activation_ranges", o.activations == "dynamic" ? "per call (quantized::linear_dynamic)"
                            : calibrated ? "calibrated: running min/max on training rows"
                                         : "QAT EMA ranges from the checkpoint"},
      {"weights", "int8 per output channel, symmetric (quantized::linear_prepack)"},
      {"bits", qopts.bits},
      {"qat", qat},
      {"linear_layers", n_linear},
      {"linear_layers_int8", n_int8},
      {"linear_layers_static", n_static},
      {"fp32_parts", "embeddings, numeric-feature tokens, norms, attention score/value products, softmax, "
                     "convolutions, selective scan"},
      {"layers", layers},
      {"accuracy", accuracy},
      {"prediction_rmse_vs_fp32_std_units", pred_rmse},
      {"speed", speed},
      {"speedup_int8_vs_fp32", int8_eps / fp32_eps},
      {"threads", threads},
      {"batch_size", batch},
      {"repeats", o.repeats},
      {"test_rows", test_rows.size()},
      {"eval_reproduces_int8_metrics", reproduced},
  };
  nlohmann::json summary = fs::exists(src / "summary.json") ? read_json_file(src / "summary.json") : nlohmann::json::object();
  if (summary.contains("metrics")) summary["source_metrics"] = summary["metrics"];
  summary["metrics"] = ev["metrics"];
  summary["threads"] = threads;
  summary["int8_checkpoint"] = "model_int8.pt";
  summary["quant"] = quant_summary(*model, parse_run_spec(out_config, /*training=*/false).quant);
  summary["int8"] = report;
  {
    std::ofstream f(out / "summary.json");
    if (!f) throw std::runtime_error("cannot write " + (out / "summary.json").string());
    f << summary.dump(2) << "\n";
  }
  report["out_dir"] = out.string();
  return report;
}

CLI::App* add_export_command(CLI::App* app, Commands& commands) {
  auto args = std::make_shared<Int8ExportOptions>();
  auto int8 = std::make_shared<bool>(false);
  auto* sub = app->add_subcommand(
      "export", "Export a trained run for int8 inference: `cerebra export --run DIR --int8` writes DIR-int8, whose "
                "Linear layers run int8 through LibTorch's quantised engine (`cerebra eval --run DIR-int8` runs it), "
                "and prints int8 vs fp32 test accuracy and speed");
  sub->add_option("--run", args->run_dir, "Run directory written by `cerebra train` (fp32 or qat: true)")->required();
  sub->add_flag("--int8", *int8, "Quantise the Linear layers to int8 (per-channel weights) — the export this command "
                                 "performs; required");
  sub->add_option("--engine", args->engine, "Quantised engine")->check(CLI::IsMember({"onednn", "qnnpack"}))
      ->capture_default_str();
  sub->add_option("--activations", args->activations,
                  "Activation quantisation: dynamic (per call from the tensor's own range) or static (the QAT-tracked "
                  "ranges; without QAT, ranges calibrated on training rows)")
      ->check(CLI::IsMember({"dynamic", "static"}))
      ->capture_default_str();
  sub->add_option("--out", args->out_dir, "Output run directory (default: DIR-int8)");
  sub->add_option("--repeats", args->repeats, "Timed passes over the test split (the median is reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--threads", args->threads, "Intra-op threads for the timing and the export (default: the run's)");
  sub->add_option("--batch-size", args->batch_size, "Batch size of the timed passes (default: the run's "
                                                    "eval_batch_size)");
  sub->add_option("--calib-rows", args->calib_rows, "Static activations without QAT: training rows for calibration")
      ->capture_default_str();
  sub->add_option("--breakdown", args->breakdown,
                  "Profile --repeats more passes of fp32 and int8 and print the N largest ops of each (ms per pass, "
                  "share, calls) and the time outside recorded ops; summary.json keeps every op")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--quiet,-q", args->quiet, "No progress lines");
  auto action = [args, int8]() -> int {
    if (!*int8) {
      std::cerr << "cerebra export: nothing to export; pass --int8 (the only export format)\n";
      return 2;
    }
    const nlohmann::json r = export_int8(*args);
    const auto& acc = r["accuracy"];
    const auto& sp = r["speed"];
    std::string t = fmt::format("\nint8 export of {} -> {}\nengine {}, {} activations, threads={}, batch {}, median of {} "
                                "passes over {} test rows\n",
                                r["source_run"].get<std::string>(), r["out_dir"].get<std::string>(),
                                r["engine"].get<std::string>(), r["activations"].get<std::string>(),
                                r["threads"].get<int>(), r["batch_size"].get<int64_t>(), r["repeats"].get<int>(),
                                r["test_rows"].get<int64_t>());
    t += fmt::format("{:<18} {:>10} {:>10} {:>14} {:>9}\n", "variant", "test RMSE", "RMSE(raw)", "examples/s",
                     "speed-up");
    auto row = [&](const std::string& name, const char* key, bool timed) {
      if (!acc.contains(key)) return;
      const double eps = timed ? sp[key]["examples_per_second_median"].get<double>() : 0.0;
      const double base = sp["fp32"]["examples_per_second_median"].get<double>();
      t += fmt::format("{:<18} {:>10} {:>10} {:>14} {:>9}\n", name, fixed(acc[key]["test_rmse"], "{:.4f}"),
                       fixed(acc[key]["test_rmse_raw"], "{:.1f}"), timed ? fmt::format("{:.0f}", eps) : "-",
                       timed ? fmt::format("{:.2f}x", eps / base) : "-");
    };
    row("fp32", "fp32", true);
    row("fake-quant (QAT)", "fake_quant", false);
    row("int8", "int8", true);
    t += fmt::format("Linear layers run in int8: {} of {} ({} static); prediction RMSE int8 vs fp32 {:.4g} (target "
                     "std units)\n",
                     r["linear_layers_int8"].get<int64_t>(), r["linear_layers"].get<int64_t>(),
                     r["linear_layers_static"].get<int64_t>(), r["prediction_rmse_vs_fp32_std_units"].get<double>());
    t += fmt::format("wrote {} (config.yaml int8: true, model_int8.pt, summary.json); `cerebra eval --run {}` {}\n",
                     r["out_dir"].get<std::string>(), r["out_dir"].get<std::string>(),
                     r["eval_reproduces_int8_metrics"].get<bool>() ? "reproduces the int8 test RMSE"
                                                                   : "gives a different test RMSE (unexpected)");
    if (args->breakdown > 0)
      for (const char* key : {"fp32", "int8"}) {
        t += fmt::format("\n{} pass over the test split, profiled:\n{}", key,
                         format_breakdown(breakdown_from_json(sp[key]["breakdown"], "pass"), args->breakdown, "pass",
                                          "  "));
      }
    std::cout << t;
    return 0;
  };
  commands.add(sub, action);
  return sub;
}

}  // namespace cerebra
