// The `cerebra` command line: train, eval, data, bench, generate.
#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "cerebra/cli/bench_layers.h"
#include "cerebra/cli/bench_step.h"
#include "cerebra/cli/command.h"
#include "cerebra/cli/cli_config.h"
#include "cerebra/core/config.h"
#include "cerebra/core/io.h"
#include "cerebra/cli/experiment_commands.h"
#include "cerebra/cli/export_command.h"
#include "cerebra/cli/flops_command.h"
#include "cerebra/cli/generate_command.h"
#include "cerebra/cli/launch.h"
#include "cerebra/data/csv.h"
#include "cerebra/core/runtime.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/data/tabular.h"
#include "cerebra/cli/bench_seq.h"
#include "cerebra/train/distributed.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"

namespace fs = std::filesystem;
using namespace cerebra;

namespace {

void print_header(const RunSpec& spec) {
  const int threads = apply_runtime(spec.runtime);
  std::string blas = loaded_blas_library();
  std::cerr << fmt::format("cerebra {} | threads={} (OpenMP wait {}) | blas={} | {}\n", torch_version(), threads,
                           openmp_wait_policy(), blas.empty() ? "none" : blas, machine_description());
}

std::string fmt_num(const nlohmann::json& v, const char* spec = "{:.4g}") {
  return v.is_number() ? fmt::format(fmt::runtime(spec), v.get<double>()) : std::string("-");
}

std::string mib(const nlohmann::json& v) { return v.is_number() ? fmt::format("{:.1f}", v.get<double>() / 1048576.0) : "-"; }

// ---- bench tasks: train several models on one task and compare

int bench_tasks(const Config& base, const std::vector<std::string>& models, const std::string& out_dir, bool quiet) {
  fs::create_directories(out_dir);
  std::vector<nlohmann::json> rows;
  std::vector<std::string> failed;
  for (const auto& m : models) {
    Config c = base;
    c.set("model", m, "--models");
    const std::string dir = (fs::path(out_dir) / m).string();
    if (!quiet) std::cerr << fmt::format("== {} ({} of {})\n", m, rows.size() + failed.size() + 1, models.size());
    try {
      rows.push_back(train_run(parse_run_spec(c), dir, RunOptions{quiet}));
    } catch (const std::exception& e) {
      std::cerr << fmt::format("error: model {} failed: {}\n", m, e.what());
      failed.push_back(m);
    }
  }
  if (rows.empty()) return 1;
  const auto& t0 = rows.front();
  const bool log_target = t0["target"]["transform"] == "log";
  std::string metric_name = log_target ? "RMSE(log)" : "RMSE";
  std::string table = fmt::format("\nTask {} (target {}{}), test split of {} rows, threads={}\n", t0["task"].get<std::string>(),
                                  t0["target"]["column"].get<std::string>(), log_target ? ", log scale" : "",
                                  t0["data"]["test"].get<int64_t>(), t0["threads"].get<int>());
  table += fmt::format("{:<12} {:>10} {:>10} {:>8} {:>9} {:>12} {:>12} {:>9} {:>9} {:>10} {:>10}\n", "model",
                       metric_name, "RMSE(raw)", "R2", "params", "FLOPs/ex", "measured", "epoch s", "train s",
                       "tensor MiB", "RSS MiB");
  std::ofstream csv(fs::path(out_dir) / "results.csv");
  csv << "model,test_rmse,test_rmse_raw,test_r2,params,flops_analytic_per_example,flops_measured_per_example,"
         "epoch_seconds_median,train_seconds_total,examples_per_second,peak_tensor_bytes,peak_rss_bytes,threads\n";
  for (const auto& r : rows) {
    const auto& m = r["metrics"];
    const auto& f = r["flops"];
    table += fmt::format("{:<12} {:>10} {:>10} {:>8} {:>9} {:>12} {:>12} {:>9} {:>9} {:>10} {:>10}\n",
                         r["model"].get<std::string>(), fmt_num(m["test_rmse"], "{:.4f}"),
                         fmt_num(m["test_rmse_raw"], "{:.1f}"), fmt_num(m["test_r2"], "{:.3f}"),
                         r["params"].get<int64_t>(), fmt_num(f["analytic_forward_per_example"], "{:.4g}"),
                         fmt_num(f["measured_forward_per_example"], "{:.4g}"),
                         fmt_num(r["time"]["epoch_seconds_median"], "{:.2f}"),
                         fmt_num(r["time"]["train_seconds_total"], "{:.1f}"), mib(r["memory"]["peak_tensor_bytes"]),
                         mib(r["memory"]["peak_rss_bytes"]));
    auto num = [](const nlohmann::json& v) { return v.is_number() ? v.dump() : std::string(""); };
    csv << r["model"].get<std::string>() << "," << num(m["test_rmse"]) << "," << num(m["test_rmse_raw"]) << ","
        << num(m["test_r2"]) << "," << r["params"] << "," << num(f["analytic_forward_per_example"]) << ","
        << num(f["measured_forward_per_example"]) << "," << num(r["time"]["epoch_seconds_median"]) << ","
        << num(r["time"]["train_seconds_total"]) << "," << num(r["time"]["examples_per_second"]) << ","
        << r["memory"]["peak_tensor_bytes"] << "," << r["memory"]["peak_rss_bytes"] << "," << r["threads"] << "\n";
  }
  table += "RMSE(raw) is in the target's own units (weekly dollars for cps1988); FLOPs count 2 per multiply-add of\n"
           "matmul-class ops per example, forward; trees do no such arithmetic (-). Peak memory is per run.\n";
  std::cout << table;
  std::ofstream(fs::path(out_dir) / "results.json") << nlohmann::json(rows).dump(2) << "\n";
  std::ofstream(fs::path(out_dir) / "results.txt") << table;
  std::cerr << fmt::format("wrote {}/results.{{csv,json,txt}} and one run directory per model\n", out_dir);
  if (!failed.empty()) {
    std::cerr << "failed models:";
    for (const auto& f : failed) std::cerr << " " << f;
    std::cerr << "\n";
    return 1;
  }
  return 0;
}

// The one-line result of `cerebra train`.
void print_train_summary(const nlohmann::json& s, const std::string& out) {
  if (s.contains("task_info")) {  // sequence tasks
    const std::string pm = s["primary_metric"].get<std::string>();
    std::cout << fmt::format("{} on {}: {} {:.4f}; {} params; {:.4g} realised FLOPs/token (measured {:.4g}); "
                             "{:.1f} s training; peak tensor {} MiB; threads={}\nwrote {}\n",
                             s["model"].get<std::string>(), s["task"].get<std::string>(), pm,
                             s["metrics"][pm].get<double>(), s["params"].get<int64_t>(),
                             s["flops"]["realised_per_token"].get<double>(),
                             s["flops"]["measured_forward_per_token"].get<double>(),
                             s["time"]["train_seconds_total"].get<double>(), mib(s["memory"]["peak_tensor_bytes"]),
                             s["threads"].get<int>(), out);
    return;
  }
  std::cout << fmt::format("{} on {}: test RMSE {:.4f} ({} scale), RMSE(raw) {:.2f}; {} params; "
                           "{:.4g} FLOPs/example (measured {}); median epoch {:.2f} s; peak tensor {} MiB; "
                           "threads={}\nwrote {}\n",
                           s["model"].get<std::string>(), s["task"].get<std::string>(),
                           s["metrics"]["test_rmse"].get<double>(), s["target"]["transform"].get<std::string>(),
                           s["metrics"]["test_rmse_raw"].get<double>(), s["params"].get<int64_t>(),
                           s["flops"]["analytic_forward_per_example"].is_number()
                               ? s["flops"]["analytic_forward_per_example"].get<double>()
                               : 0.0,
                           fmt_num(s["flops"]["measured_forward_per_example"]),
                           s["time"]["epoch_seconds_median"].get<double>(), mib(s["memory"]["peak_tensor_bytes"]),
                           s["threads"].get<int>(), out);
}

// ---- the subcommands of main itself (the others register in their own files the same way)

void add_train_command(CLI::App* app, Commands& commands) {
  struct Args {
    ConfigArgs config;
    std::string out;
    bool quiet = false, resume = false;
    LaunchArgs launch;
  };
  auto a = std::make_shared<Args>();
  auto* train = app->add_subcommand("train", "Train one model: `cerebra train --config FILE [--key value ...]`");
  train->add_option("--out", a->out, "Run directory (default: runs/<task>-<model>-s<seed>)");
  train->add_flag("--quiet,-q", a->quiet, "No progress display");
  train->add_flag("--resume", a->resume,
                  "Continue the unfinished run in the run directory from its last checkpoint (resume.pt), ending as "
                  "if never stopped; a finished run is reported, not retrained; a run of another config is refused "
                  "with the differing keys. Without --config, the run's own config.yaml is used, with any --key "
                  "options on top (give --out; a directory without a run starts one from the --key options): "
                  "`--resume --out DIR --threads 1` continues a one-thread run");
  add_launch_options(train, a->launch);
  add_config_options(train, a->config);
  commands.add(train, [train, a] {
    const Launch launch = resolve_launch(a->launch);
    const bool is_rank = launch.kind == Launch::Kind::kRank;
    // --resume without --config: the run's own config.yaml with the command-line keys on top; with keys but no run
    // there yet, the keys start it.
    std::string run_config;
    if (a->resume && a->config.files.empty()) {
      bool keys_given = false;
      for (const auto& [key, opt] : a->config.options) keys_given = keys_given || opt->count() > 0;
      if (a->out.empty() && !keys_given)
        throw ConfigError("--resume without --config needs --out DIR (the run to continue)");
      const fs::path own = fs::path(a->out) / "config.yaml";
      if (!a->out.empty() && fs::exists(own))
        run_config = own.string();
      else if (!keys_given)
        throw ConfigError("--resume: " + a->out + " holds no run (no config.yaml); give the run's --config to start it");
    }
    const Config config = build_config(train, a->config, nullptr, run_config);
    RunSpec spec = parse_run_spec(config);
    const std::string out = a->out.empty() ? spec.default_run_dir() : a->out;
    if (launch.kind != Launch::Kind::kSingle && spec.model.is_estimator())
      throw ConfigError(fmt::format("model '{}' is fitted by its own method, not trained by gradient steps; run it as "
                                    "one process (without --nproc or a world size)", spec.model.name));
    if (is_rank) {  // one rank: rank 0 writes, and decides for all (train_run)
      if (spec.runtime.threads == 0) spec.runtime.threads = threads_per_rank(launch.dist.local_world_size);
      const std::string who = fmt::format("rank {} of {}: ", launch.dist.rank, launch.dist.world_size);
      try {
        ensure_data(spec.task, CEREBRA_SOURCE_DIR);
        Distributed dist(launch.dist);
        if (dist.root()) print_header(spec);
        RunOptions options;
        options.quiet = a->quiet || !dist.root();
        options.resume = a->resume;
        options.dist = &dist;
        const nlohmann::json summary = train_run(spec, out, options);
        if (dist.root()) print_train_summary(summary, out);
        return 0;
      } catch (const ConfigError& e) {  // every message names the rank it comes from
        throw ConfigError(who + e.what());
      } catch (const c10::Error& e) {
        throw std::runtime_error(who + e.what_without_backtrace());
      } catch (const std::exception& e) {
        const std::string m = e.what();
        throw std::runtime_error(m.rfind("distributed:", 0) == 0 ? m : who + m);
      }
    }
    check_writable_dir(out);
    const RunProgress progress = run_progress(spec.config, out);
    using State = RunProgress::State;
    if (a->resume && progress.state == State::kFinished) {
      std::cerr << "cerebra: the run in " << out << " is finished (summary.json); nothing to resume\n";
      print_train_summary(read_json_file(fs::path(out) / "summary.json"), out);
      return 0;
    }
    if (a->resume && progress.state == State::kOtherConfig) {
      std::string keys;
      for (const auto& d : progress.differences) keys += "\n  " + d;
      throw ConfigError("--resume: " + out + " holds a run of another config (run's value -> this one):" + keys);
    }
    if (a->resume && progress.state == State::kEmpty)
      std::cerr << "cerebra: nothing to resume in " << out << "; starting the run\n";
    if (a->resume && progress.state == State::kUnfinished && !progress.has_checkpoint)
      std::cerr << "cerebra: the run in " << out << " has no checkpoint yet; starting it from the beginning\n";
    if (!a->resume && progress.has_checkpoint)
      std::cerr << "cerebra: " << out << " holds an unfinished run; starting over (--resume continues it)\n";
    ensure_data(spec.task, CEREBRA_SOURCE_DIR);
    if (launch.kind == Launch::Kind::kSpawner) return spawn_ranks(launch);  // checked and exported once, here
    print_header(spec);
    RunOptions options;
    options.quiet = a->quiet;
    options.resume = a->resume;
    print_train_summary(train_run(spec, out, options), out);
    return 0;
  });
}

void add_eval_command(CLI::App* app, Commands& commands) {
  auto dir = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto* eval = app->add_subcommand("eval", "Reload a run's checkpoint and recompute its test metrics");
  eval->add_option("--run", *dir, "Run directory written by `cerebra train`")->required();
  eval->add_option("--set", *sets, "KEY=VALUE: evaluate with a config key changed, one that keeps the model's "
                   "parameters (e.g. eval_routing=topk for a causal cerebra run, eval_batch_size=64); repeatable");
  commands.add(eval, [dir, sets] {
    std::map<std::string, std::string> overrides;
    for (const auto& kv : *sets) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        throw ConfigError("--set '" + kv + "': expected KEY=VALUE, e.g. --set eval_routing=topk");
      overrides[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    nlohmann::json r = eval_run(*dir, RunOptions{}, overrides);
    std::cout << r.dump(2) << "\n";
    if (r.contains("matches_summary"))
      std::cerr << (r["matches_summary"].get<bool>() ? "test metrics reproduce summary.json exactly\n"
                                                     : "warning: test metrics differ from summary.json\n");
    return 0;
  });
}

void add_data_command(CLI::App* app, Commands& commands) {
  struct Args {
    std::string out = "data";
    bool force = false;
  };
  auto a = std::make_shared<Args>();
  auto* data = app->add_subcommand("data", "Export the data sets (CPS1988, stackoverflow, Jane Austen) from Debian's "
                                           "R packages into CSV, with provenance");
  data->add_option("--out", a->out, "Output directory")->capture_default_str();
  data->add_flag("--force", a->force, "Export again even if the files are present and unchanged");
  commands.add(data, [a] { return run_data_export(a->out, a->force, CEREBRA_SOURCE_DIR); });
}

void add_bench_tasks_command(CLI::App* bench, Commands& commands) {
  struct Args {
    ConfigArgs config;
    std::string models = "ols,xgboost,mlp,lstm,transformer", out, lr_sweep;
    bool quiet = false;
    SeqBenchOptions seq;
  };
  auto a = std::make_shared<Args>();
  auto* tasks = bench->add_subcommand("tasks", "Train several models on one task and print a comparison table "
                                               "(metric, parameters, FLOPs, time, memory); writes CSV, JSON and text");
  tasks->add_option("--models", a->models, "Comma-separated models (sequence tasks: default "
                                           "transformer,mamba,lstm,cnn,cerebra)")->capture_default_str();
  tasks->add_option("--out", a->out, "Output directory (default: runs/bench-<task>)");
  tasks->add_flag("--quiet,-q", a->quiet, "No progress display");
  tasks->add_option("--n", a->seq.n, "Sequence tasks: sequence length (seq_len; max_len for wordnet)");
  tasks->add_option("--budget-params", a->seq.budget_params,
                    "Sequence tasks: choose d_model per model so its parameters are closest to this budget");
  tasks->add_option("--mem-limit-gib", a->seq.mem_limit_gib,
                    "Sequence tasks: skip models whose estimated training memory exceeds this")->capture_default_str();
  tasks->add_option("--lr-sweep", a->lr_sweep,
                    "Sequence tasks: comma-separated learning rates (e.g. 1e-3,3e-3,1e-2); each model trains at each "
                    "and its best run on the validation metric is selected; results.csv lists every run");
  tasks->add_option("--seeds", a->seq.seeds,
                    "Sequence tasks: runs per model and learning rate (seeds: the config's seed, seed+1, ...); the "
                    "table reports mean ± std, selection uses the mean validation metric, runs.csv lists every run")
      ->capture_default_str();
  tasks->add_option("--sweep-seeds", a->seq.sweep_seeds,
                    "Sequence tasks with --lr-sweep and --seeds: each learning rate trains on the first K seeds, the "
                    "one selected on their mean validation metric on all --seeds (0 = every rate on every seed)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  add_config_options(tasks, a->config);
  commands.add(tasks, [tasks, a] {
    Config config = build_config(tasks, a->config);
    const RunSpec spec = parse_run_spec(config);
    const std::string out = a->out.empty() ? "runs/bench-" + spec.task.name : a->out;
    check_writable_dir(out);
    ensure_data(spec.task, CEREBRA_SOURCE_DIR);
    print_header(spec);
    std::string list = a->models;
    if (is_seq_task(spec.task.name) && tasks->get_option("--models")->count() == 0)
      list = "transformer,mamba,lstm,cnn,cerebra";
    std::vector<std::string> models;
    std::stringstream ss(list);
    for (std::string m; std::getline(ss, m, ',');)
      if (!m.empty()) models.push_back(m);
    if (is_seq_task(spec.task.name)) {
      SeqBenchOptions seq = a->seq;
      seq.quiet = a->quiet;
      if (!a->lr_sweep.empty()) seq.lrs = parse_lr_sweep(a->lr_sweep);
      return bench_seq_tasks(config, models, out, seq);
    }
    if (!a->lr_sweep.empty()) throw ConfigError("--lr-sweep applies to sequence tasks only");
    if (a->seq.seeds != 1) throw ConfigError("--seeds applies to sequence tasks only (tabular: cerebra sweep --seeds)");
    if (a->seq.sweep_seeds != 0) throw ConfigError("--sweep-seeds applies to sequence tasks only");
    return bench_tasks(config, models, out, a->quiet);
  });
}

}  // namespace

int main(int argc, char** argv) {
  prefer_passive_openmp_wait(argv);
  install_counting_allocator();
  CLI::App app{"cerebra: compute-aware sequence models, trained and measured on the accuracy-compute frontier.\n"
               "Every run prints its thread count and BLAS, and writes config.yaml, metrics.jsonl, split.json,\n"
               "the checkpoint and summary.json to its output directory."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");

  Commands commands;
  add_train_command(&app, commands);
  add_eval_command(&app, commands);
  add_data_command(&app, commands);
  auto* bench = app.add_subcommand("bench", "Benchmarks and comparisons");
  bench->require_subcommand(1);
  add_bench_tasks_command(bench, commands);
  add_bench_layers_command(bench, commands);
  add_bench_allreduce_command(bench, commands);
  add_bench_step_command(bench, CEREBRA_SOURCE_DIR, commands);
  add_bench_generate_command(bench, commands);
  add_flops_command(&app, commands);
  add_experiment_commands(&app, CEREBRA_SOURCE_DIR, commands);
  add_export_command(&app, commands);
  add_generate_command(&app, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (const auto* action = commands.parsed()) return (*action)();
  } catch (const ConfigError& e) {
    std::cerr << "config error: " << e.what() << "\n";
    return 2;
  } catch (const CsvError& e) {
    std::cerr << "data error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
