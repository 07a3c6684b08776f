// `cerebra sweep`, `cerebra reproduce table1`, `cerebra report`, `cerebra plot`. See
// include/cerebra/experiment_commands.h.
#include "cerebra/cli/experiment_commands.h"
#include "cerebra/cli/command.h"

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <tuple>

#include "cerebra/cli/bench_seq.h"
#include "cerebra/cli/cli_config.h"
#include "cerebra/cli/ladder.h"
#include "cerebra/core/config.h"
#include "cerebra/core/io.h"
#include "cerebra/train/spec.h"
#include "cerebra/exp/experiments.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {

// A file of the source tree (e.g. "configs/table1/rows.yaml"): from $CEREBRA_HOME, the working directory or the
// source directory the binary was built from.
std::string find_config_file(const std::string& relative, const std::string& source_dir, const std::string& option) {
  std::vector<fs::path> candidates;
  if (const char* home = std::getenv("CEREBRA_HOME")) candidates.emplace_back(fs::path(home) / relative);
  candidates.emplace_back(relative);
  if (!source_dir.empty()) candidates.emplace_back(fs::path(source_dir) / relative);
  for (const auto& c : candidates)
    if (fs::exists(c)) return c.string();
  throw std::runtime_error("cannot find " + relative + " (give " + option + " FILE or set CEREBRA_HOME)");
}

// The KEY=VALUE pairs of repeated --set options.
std::vector<std::pair<std::string, std::string>> parse_set_options(const std::vector<std::string>& set) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& kv : set) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) throw ConfigError("--set '" + kv + "': expected KEY=VALUE");
    out.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return out;
}

struct SweepArgs {
  ConfigArgs config;
  std::vector<std::string> grids;
  int64_t seeds = 3;
  std::string out, metric, series, shard;
  bool verbose = false, no_plots = false;
};

struct ReproduceArgs {
  bool quick = false, verbose = false, no_plots = false;
  int64_t seeds = 0;
  int threads = 0;
  bool threads_given = false;
  std::string out, rows;
  std::vector<std::string> set;
};

struct DirArgs {
  std::string dir, metric;
  bool no_plots = false;
};

int run_sweep_command(CLI::App* cmd, SweepArgs& a, const std::string& source_dir) {
  std::string command = "cerebra sweep";
  Config base = build_config(cmd, a.config, &command);
  const RunSpec base_spec = parse_run_spec(base);
  std::vector<exp::GridAxis> axes;
  for (const auto& g : a.grids) {
    axes.push_back(exp::parse_grid(g));
    command += " --grid \"" + g + "\"";
  }
  std::vector<std::string> series;
  if (!a.series.empty()) {
    std::stringstream ss(a.series);
    for (std::string k; std::getline(ss, k, ',');)
      if (!k.empty()) series.push_back(k);
  }
  const auto points = exp::grid_points(base, axes, series);
  exp::SweepOptions o;
  o.out = a.out.empty() ? fmt::format("runs/sweep-{}-{}", base_spec.task.name, base_spec.model.name) : a.out;
  o.title = "sweep " + o.out;
  if (!a.shard.empty()) {  // this shard's runs go to OUT/shard-i-of-N; `cerebra report OUT` merges the shards
    std::tie(o.shard_index, o.shard_count) = exp::parse_shard(a.shard);
    command += " --shard " + a.shard;
    if (o.shard_count > 1) o.out = (fs::path(o.out) / exp::shard_dir_name(o.shard_index, o.shard_count)).string();
  }
  check_writable_dir(o.out);
  ensure_data(base_spec.task, source_dir);
  o.seeds = a.seeds;
  o.metric = a.metric;
  o.quiet_runs = !a.verbose;
  o.plots = !a.no_plots;
  command += fmt::format(" --seeds {} --out {}", a.seeds, o.out) + (a.metric.empty() ? "" : " --metric " + a.metric);
  o.extra = {{"command", command}};
  const auto r = exp::run_sweep(points, o);
  const auto t = exp::load_sweep(o.out, a.metric);
  std::cout << fmt::format("{:<44} {:>7} {:>20} {:>14} {:>10} {:>8}\n", "point", "ok", t.metric.name + " (mean±std)",
                           "FLOPs/example", "epoch s", "frontier");
  for (const auto& p : t.points)
    std::cout << fmt::format("{:<44} {:>7} {:>20} {:>14} {:>10} {:>8}\n", p.label.substr(0, 44),
                             fmt::format("{}/{}", p.n_ok, p.n_runs), exp::format_stat(p.metric, 4),
                             std::isfinite(p.flops_realised.mean) ? fmt::format("{:.4g}", p.flops_realised.mean) : "-",
                             std::isfinite(p.epoch_seconds.mean) ? fmt::format("{:.2f}", p.epoch_seconds.mean) : "-",
                             std::string(p.front_flops ? "F" : "") + (p.front_time ? "T" : ""));
  std::cout << fmt::format("frontier: F = non-dominated in {} vs realised FLOPs, T = vs epoch time ({} is better)\n"
                           "wrote {}/{{table,runs,frontier}}.{{csv,json}}{}\n",
                           t.metric.name, t.metric.higher_is_better ? "higher" : "lower", o.out,
                           r.plot_error.empty() && o.plots ? " and plots/frontier_{flops,time}.{png,svg}" : "");
  if (!r.plot_error.empty()) std::cerr << "plots not drawn: " << r.plot_error << "\n";
  return r.failed > 0 ? 1 : 0;
}

int run_reproduce_command(ReproduceArgs& a, const std::string& source_dir) {
  exp::Table1Options o;
  o.rows_file = a.rows.empty() ? find_config_file("configs/table1/rows.yaml", source_dir, "--rows") : a.rows;
  o.quick = a.quick;
  o.seeds = a.seeds;
  o.out = a.out.empty() ? (a.quick ? "runs/table1-quick" : "runs/table1") : a.out;
  o.quiet_runs = !a.verbose;
  o.plots = !a.no_plots;
  if (a.threads_given) o.overrides.emplace_back("threads", std::to_string(a.threads));
  for (const auto& kv : parse_set_options(a.set)) o.overrides.push_back(kv);
  Config probe;  // unknown keys, bad types and out-of-range values fail before any run
  for (const auto& [k, v] : o.overrides) probe.set(k, v, k == "threads" ? "--threads" : "--set " + k);
  parse_run_spec(probe);
  check_writable_dir(o.out);
  const auto r = exp::reproduce_table1(o);
  std::cout << exp::table1_markdown(exp::load_sweep(o.out));
  std::cerr << fmt::format("wrote {}/table1.md and table1.csv (report: cerebra report {})\n", o.out, o.out);
  if (!r.plot_error.empty()) std::cerr << "plots not drawn: " << r.plot_error << "\n";
  return r.failed > 0 ? 1 : 0;
}

}  // namespace

void add_experiment_commands(CLI::App* app, const std::string& source_dir, Commands& commands) {
  // sweep
  auto sa = std::make_shared<SweepArgs>();
  auto* sweep = app->add_subcommand(
      "sweep",
      "Run a grid of config values x seeds (one run directory each), aggregate mean ± sample std over seeds, and\n"
      "write the table, the Pareto frontier (metric vs realised FLOPs per example, and vs epoch time) and plots.\n"
      "Resumable: a run whose summary.json is complete and whose config.yaml equals the planned config is reused;\n"
      "a failed run is recorded (error.txt, status in runs.csv) and the others go on.\n"
      "Example: cerebra sweep --config configs/cerebra_compress_router.yaml --grid \"lambda=0,1e-3,1e-2\" \\\n"
      "           --grid \"compression_ratio=0.25,0.5\" --seeds 3 --out runs/sweep-lambda --epochs 10");
  sweep->add_option("--grid", sa->grids,
                    "KEY=V1,V2,...: a config key and its values; repeat for a Cartesian grid (first varies slowest)")
      ->required();
  sweep->add_option("--seeds", sa->seeds, "Seeds per grid point: the config's seed, seed+1, ...")->capture_default_str();
  sweep->add_option("--out", sa->out, "Sweep directory (default: runs/sweep-<task>-<model>)");
  sweep->add_option("--metric", sa->metric,
                    "Summary metric, e.g. test_rmse, test_accuracy, or name:max / name:min to set the direction "
                    "(default: the task's primary metric, e.g. test_rmse, test_accuracy, test_bits_per_char; "
                    "accuracy/f1/r2-like names are higher-is-better)");
  sweep->add_option("--series", sa->series,
                    "Comma-separated config keys whose values name the plot series (default: model when swept, "
                    "else every grid key but the first, else the model)");
  sweep->add_option("--shard", sa->shard,
                    "i/N: run only the planned runs whose index is i modulo N (shards 0 ... N-1), into "
                    "OUT/shard-i-of-N, so N machines or jobs (a Slurm array, GNU parallel, ssh) share a sweep; "
                    "`cerebra report OUT` merges the shard directories into one table");
  sweep->add_flag("--verbose,-v", sa->verbose, "Show each run's per-epoch progress");
  sweep->add_flag("--no-plots", sa->no_plots, "Write tables only");
  add_config_options(sweep, sa->config, ", applied to every run");

  // reproduce table1
  auto ra = std::make_shared<ReproduceArgs>();
  auto* reproduce = app->add_subcommand("reproduce", "Regenerate the paper's tables with measured numbers");
  reproduce->require_subcommand(1);
  auto* table1 = reproduce->add_subcommand(
      "table1",
      "Table 1 on the salary task (CPS1988): small Transformer, LSTM, Cerebra compression-only, compression +\n"
      "router, full (+ sampler + pruning). Columns: test RMSE, relative FLOPs (Transformer = 1.00, realised FLOPs\n"
      "per example), epoch time, peak memory; mean ± std over seeds. Rows come from configs/table1/rows.yaml; a\n"
      "row whose config is missing or invalid is reported as unavailable. Writes table1.md and table1.csv plus\n"
      "everything a sweep writes; resumable.");
  table1->add_flag("--quick", ra->quick,
                   "A first look in a few minutes: the manifest's quick overrides (fewer epochs, max_rows) and 1 seed");
  table1->add_option("--seeds", ra->seeds, "Seeds per row (default: the manifest's, 3; quick: 1)");
  table1->add_option("--out", ra->out, "Output directory (default: runs/table1 or runs/table1-quick)");
  table1->add_option("--rows", ra->rows, "Row manifest (default: configs/table1/rows.yaml; also rows_recipe.yaml: each part of the recipe alone on the "
                  "salary task, rows_mqar.yaml: the same on MQAR)");
  table1->add_option("--threads", ra->threads, "Intra-op threads of every run (0 = the cores idle at the start)");
  table1->add_option("--set", ra->set, "KEY=VALUE config override applied to every row (repeatable)");
  table1->add_flag("--verbose,-v", ra->verbose, "Show each run's per-epoch progress");
  table1->add_flag("--no-plots", ra->no_plots, "Write tables only");

  // reproduce ladder
  struct LadderArgs {
    LadderOptions o;
    std::string rungs, models, lr_sweep;
    int threads = 0;
    std::vector<std::string> set;
    bool verbose = false;
  };
  auto la = std::make_shared<LadderArgs>();
  auto* ladder = reproduce->add_subcommand(
      "ladder",
      "The difficulty ladder (configs/ladder/: MQAR, selective copy, induction heads at growing lengths): on each\n"
      "rung every model of the manifest at a matched parameter budget, the best of a learning-rate sweep on\n"
      "validation, mean ± std over seeds, realised FLOPs per token, training time and peak memory; a plot of the\n"
      "metric against realised FLOPs per rung. Writes OUT/<rung>/ (as `cerebra bench tasks`) and OUT/ladder.md;\n"
      "resumable. Example: cerebra reproduce ladder --quick; cerebra reproduce ladder --rungs mqar_n64 --threads 1");
  ladder->add_option("--manifest", la->o.manifest, "Ladder manifest (default: configs/ladder/ladder.yaml)");
  ladder->add_flag("--quick", la->o.quick,
                   "A first look in a few minutes: the manifest's quick variant (one rung, a few models, short runs)");
  ladder->add_option("--rungs", la->rungs, "Comma-separated rungs to run (config names, e.g. mqar_n64,mqar_n256)");
  ladder->add_option("--models", la->models, "Comma-separated models, replacing the manifest's");
  ladder->add_option("--seeds", la->o.seeds, "Seeds per model and learning rate, replacing the manifest's");
  ladder->add_option("--lr-sweep", la->lr_sweep, "Comma-separated learning rates, replacing the manifest's");
  ladder->add_option("--sweep-seeds", la->o.sweep_seeds,
                     "Seeds on which the learning rates are compared (the selected one then runs on every seed; 0 = "
                     "every rate on every seed), replacing the manifest's")
      ->check(CLI::NonNegativeNumber);
  ladder->add_option("--out", la->o.out, "Output directory (default: runs/ladder or runs/ladder-quick)");
  ladder->add_option("--threads", la->threads, "Intra-op threads of every run (0 = the cores idle at the start)");
  ladder->add_option("--set", la->set, "KEY=VALUE config override applied to every rung (repeatable)");
  ladder->add_flag("--verbose,-v", la->verbose, "Show each run's progress");

  // report and plot
  auto rep = std::make_shared<DirArgs>();
  auto* report = app->add_subcommand(
      "report",
      "Write DIR/report.md from a sweep / reproduce directory (sweep.json) or a `bench tasks` / `bench layers`\n"
      "directory (results.json): machine, threads, BLAS, versions, config hashes, tables and the plots.\n"
      "A sweep directory holding shard-i-of-N directories (cerebra sweep --shard i/N) is merged first: its\n"
      "sweep.json becomes the whole plan and the tables list every run from the shard that ran it.");
  report->add_option("dir", rep->dir, "Directory to report on")->required();
  report->add_flag("--no-plots", rep->no_plots, "Do not (re)draw plots; link those present");
  auto pl = std::make_shared<DirArgs>();
  auto* plot = app->add_subcommand(
      "plot",
      "Draw DIR/plots/*.png and *.svg (gnuplot): Pareto frontiers of a sweep directory, or log-log time and memory\n"
      "vs n with fitted slopes of a `bench layers` directory (also writes scaling.csv).");
  plot->add_option("dir", pl->dir, "Sweep or bench layers directory")->required();
  plot->add_option("--metric", pl->metric, "Sweep metric (name or name:max/min; default: the sweep's)");

  commands.add(sweep, [=] { return run_sweep_command(sweep, *sa, source_dir); });
  commands.add(table1, [=] {
    ra->threads_given = table1->get_option("--threads")->count() > 0;
    return run_reproduce_command(*ra, source_dir);
  });
  commands.add(ladder, [=] {
    LadderOptions o = la->o;
    if (o.manifest.empty()) o.manifest = find_config_file("configs/ladder/ladder.yaml", source_dir, "--manifest");
    if (o.out.empty()) o.out = o.quick ? "runs/ladder-quick" : "runs/ladder";
    o.quiet = !la->verbose;
    auto split = [](const std::string& list) {
      std::vector<std::string> out;
      std::stringstream ss(list);
      for (std::string s; std::getline(ss, s, ',');)
        if (!s.empty()) out.push_back(s);
      return out;
    };
    o.rungs = split(la->rungs);
    o.models = split(la->models);
    if (!la->lr_sweep.empty()) o.lrs = parse_lr_sweep(la->lr_sweep);
    if (ladder->get_option("--threads")->count() > 0) o.overrides.emplace_back("threads", std::to_string(la->threads));
    for (const auto& kv : parse_set_options(la->set)) o.overrides.push_back(kv);
    return run_ladder(o);
  });
  commands.add(report, [=] {
    exp::write_report(rep->dir, !rep->no_plots);
    std::cout << "wrote " << (fs::path(rep->dir) / "report.md").string() << "\n";
    return 0;
  });
  commands.add(plot, [=] {
    std::string err;
    if (fs::exists(fs::path(pl->dir) / "sweep.json"))
      err = exp::write_sweep_outputs(exp::load_sweep(pl->dir, pl->metric), true);
    else if (fs::exists(fs::path(pl->dir) / "results.json") &&
             nlohmann::json::parse(std::ifstream(fs::path(pl->dir) / "results.json"), nullptr, false).is_array())
      exp::write_report(pl->dir, true);  // bench tasks: the report draws its frontier plot
    else if (fs::exists(fs::path(pl->dir) / "results.json"))
      err = exp::write_scaling_outputs(pl->dir, true);
    else
      throw std::runtime_error("plot: " + pl->dir + " holds neither sweep.json nor a bench layers results.json");
    if (!err.empty()) throw std::runtime_error(err);
    std::cout << "wrote " << (fs::path(pl->dir) / "plots").string() << "/*.png and *.svg\n";
    return 0;
  });
}

}  // namespace cerebra
