// Experiments a researcher can trust: sweeps over a grid of config values × seeds, aggregation over seeds,
// accuracy–compute Pareto frontiers, plots (gnuplot) and Markdown reports.
//
// A sweep directory holds sweep.json (the plan: points, seeds, run directories, metric), one run directory per
// point and seed (written by train_run; a failed run leaves error.txt), and, after aggregation, runs.csv (one row
// per run, status ok | failed | missing), table.csv / table.json (one row per point: mean ± sample std over the
// seeds that finished), frontier.csv / frontier.json (the non-dominated points in metric vs realised FLOPs per
// example and in metric vs median epoch time), and plots/*.png + plots/*.svg.
//
// Nothing here needs LibTorch except run_sweep, which calls the run function it is given (train_run by default).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"

namespace cerebra {

struct RunOptions;

namespace exp {

// ---- metrics ---------------------------------------------------------------------------------------------------

// A task metric and its direction. Parsed from "name" or "name:max" / "name:min"; without a suffix the direction
// follows the name: accuracy, f1, r2, auc, precision, recall, exact match -> higher is better; anything else
// (rmse, mae, loss, bpc, perplexity, ...) -> lower is better.
struct MetricSpec {
  std::string name;
  bool higher_is_better = false;
};
MetricSpec parse_metric(const std::string& text);
bool metric_higher_is_better(const std::string& name);
// The metric to use when none is given: the summary's primary_metric (the task's own, e.g. test_bits_per_char),
// else the first of test_rmse, test_accuracy, test_macro_f1 present in summary["metrics"], else the first metrics
// key starting with "test_", else the first key. Empty if none.
std::string default_metric(const nlohmann::json& summary);
// Value of `name` in a run summary: summary["metrics"][name], or a dotted path from the root
// ("flops.realised_per_example"). NaN when missing or not a number.
double summary_value(const nlohmann::json& summary, const std::string& name);

// ---- Pareto frontier -------------------------------------------------------------------------------------------

struct CostPoint {
  double cost = 0;   // e.g. realised FLOPs per example or seconds: lower is better
  double value = 0;  // the metric
};
// True when a is at least as good as b in both cost and value and strictly better in one.
bool dominates(const CostPoint& a, const CostPoint& b, bool higher_is_better);
// Indices of the non-dominated points, ordered by increasing cost (ties by index). Points with a non-finite cost
// or value take no part. Exact duplicates of a non-dominated point are all kept (none dominates another).
std::vector<size_t> pareto_front(const std::vector<CostPoint>& points, bool higher_is_better);

// ---- statistics over seeds -------------------------------------------------------------------------------------

struct Stat {
  int64_t n = 0;    // finite values used
  double mean = 0;  // NaN when n == 0
  double std = 0;   // sample standard deviation (n - 1); NaN when n < 2
};
Stat summarize(const std::vector<double>& values);  // non-finite values (missing / failed seeds) are skipped
// "0.5234 ± 0.0012" with printf-style precision `digits`; "-" when n == 0; no "±" when n < 2.
std::string format_stat(const Stat& s, int digits = 4);

// Least-squares slope of log y on log x over the points with x > 0 and y > 0 finite; NaN with fewer than 2.
double loglog_slope(const std::vector<double>& x, const std::vector<double>& y);

// FNV-1a 64-bit hash, as 16 hex digits (config and data hashes).
std::string fnv1a64_hex(const std::string& bytes);

// ---- plots -----------------------------------------------------------------------------------------------------

// gnuplot, from $CEREBRA_GNUPLOT or PATH. Empty when it cannot be found.
std::string gnuplot_binary();
// Runs a gnuplot script in `dir`; throws with a clear message (naming the package to install) when gnuplot is
// missing, or with gnuplot's own error output when the script fails.
void run_gnuplot(const std::string& dir, const std::string& script_name);

struct Series {
  std::string title;
  // x, y and their standard deviations (NaN = no error bar)
  std::vector<double> x, y, x_err, y_err;
};
struct Figure {
  std::string stem;  // file name without extension: writes stem.png, stem.svg, stem.gp, stem.dat
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  std::vector<Series> series;
  Series frontier;  // drawn as a staircase when it has points
  bool lines = false;  // join the points of a series (scaling plots)
  std::string xformat;  // gnuplot tic format of x, e.g. "%.3g" (the tics are then rotated); empty = gnuplot's default
};
// Writes the data and script for `fig` into `dir` and runs gnuplot: returns the PNG and SVG paths.
std::vector<std::string> draw_figure(const std::string& dir, const Figure& fig);

// ---- sweeps ----------------------------------------------------------------------------------------------------

struct GridAxis {
  std::string key;
  std::vector<std::string> values;
};
// "lambda=0,1e-4,1e-3": the key must be a config key and every value valid for it (ConfigError otherwise).
GridAxis parse_grid(const std::string& text);

// One point of a sweep: a config (without the seed) and how it is named and grouped.
struct PlanPoint {
  std::string name;    // directory-safe id, e.g. "lambda=1e-3__compression_ratio=0.5"
  std::string label;   // for tables, e.g. "lambda=1e-3 compression_ratio=0.5"
  std::string series;  // plot series this point belongs to
  std::vector<std::pair<std::string, std::string>> params;  // swept key -> value (table columns)
  Config config;
  std::string unavailable;  // non-empty: the point cannot run (reason); reported, never run
};

// The Cartesian product of the axes over `base`, first axis varying slowest. Series: points sharing the values
// of `series_keys` (default: every axis but the first, or just `model` when it is swept; with one axis, a single
// series named after the model).
std::vector<PlanPoint> grid_points(const Config& base, const std::vector<GridAxis>& axes,
                                   std::vector<std::string> series_keys = {});

using RunFunction =
    std::function<nlohmann::json(const Config& config, const std::string& out_dir, const RunOptions& options)>;

struct SweepOptions {
  std::string out;
  int64_t seeds = 3;            // seeds base, base + 1, ... (base = each point's `seed` key)
  std::string metric;           // empty = default_metric of the first finished run
  std::string title = "sweep";  // shown in plots and reports
  bool quiet_runs = true;       // no per-epoch progress inside runs
  bool quiet = false;           // no sweep progress lines either
  bool plots = true;
  nlohmann::json extra;         // stored in sweep.json (e.g. the command line)
  RunFunction run;              // default: train_run
  // Sharding: this process runs the planned runs whose index (in plan order) is shard_index modulo shard_count.
  int64_t shard_index = 0, shard_count = 1;
};

// "i/N" (0 <= i < N): the shard of a sweep this process runs. ConfigError naming the problem otherwise.
std::pair<int64_t, int64_t> parse_shard(const std::string& text);
// The directory of shard i of N inside a sweep directory: "shard-<i>-of-<N>".
std::string shard_dir_name(int64_t index, int64_t count);
// A sweep directory whose shard-*-of-* subdirectories hold the shards of one sweep: writes its sweep.json as the
// whole plan, each run pointing into the shard that ran it, so load_sweep and the report see one sweep. Throws when
// the shards belong to different plans or a run is in two shards; returns notes (e.g. shards not there yet).
// Returns false (and writes nothing) when the directory holds no shards.
bool merge_sweep_shards(const std::string& dir, std::vector<std::string>* notes = nullptr);

struct SweepOutcome {
  int64_t total = 0, ran = 0, skipped = 0, failed = 0, unavailable = 0;
  std::string plot_error;  // why plots were not drawn (e.g. gnuplot missing); empty when drawn or not asked for
};

// Runs every point × seed (of its shard) not already complete (summary.json present, with metrics, and config.yaml identical to
// the planned config), continuing unfinished runs of the planned config from their resume checkpoints (the run
// function gets RunOptions::resume), records failures (error.txt in the run directory) and goes on, then
// aggregates.
SweepOutcome run_sweep(const std::vector<PlanPoint>& points, const SweepOptions& options);

// Name of one run directory inside a sweep: "<point>__seed=<seed>".
std::string run_dir_name(const PlanPoint& point, int64_t seed);
// True when `run_dir` holds a finished run of `config` (see run_sweep).
bool run_complete(const std::string& run_dir, const Config& config);

// ---- aggregation -----------------------------------------------------------------------------------------------

struct RunRecord {
  std::string point, dir;  // dir relative to the sweep directory
  int64_t seed = 0;
  std::string status;      // ok | failed | missing | unavailable
  std::string error;
  nlohmann::json summary;  // when ok
  std::string config_hash;
};

struct PointStats {
  std::string name, label, series, unavailable;
  std::vector<std::pair<std::string, std::string>> params;
  int64_t n_runs = 0, n_ok = 0, n_failed = 0, n_missing = 0;
  Stat metric, flops_realised, flops_dense, relative_flops, epoch_seconds, train_seconds, peak_tensor_bytes,
      peak_rss_bytes, params_count;
  std::vector<std::string> errors;
  bool front_flops = false, front_time = false;
};

struct SweepTable {
  std::string dir, title;
  MetricSpec metric;
  std::vector<RunRecord> runs;
  std::vector<PointStats> points;
  nlohmann::json plan;  // sweep.json
};

// Reads sweep.json and every run of `dir`, aggregates over seeds and marks the frontiers. `metric` overrides the
// one in sweep.json when not empty.
SweepTable load_sweep(const std::string& dir, const std::string& metric = "");
// Writes runs.csv, table.csv, table.json, frontier.csv, frontier.json; then plots unless `plots` is false.
// Returns the reason plots were not drawn (empty when they were or were not asked for).
std::string write_sweep_outputs(const SweepTable& table, bool plots);
// Axis label of a metric, e.g. "test_rmse (log target; lower is better)".
std::string metric_axis_label(const MetricSpec& metric, const nlohmann::json& sample_summary);

// ---- bench layers scaling --------------------------------------------------------------------------------------

struct ScalingFit {
  std::string impl;
  std::vector<double> n, ms, peak_mib;
  double time_slope = 0, memory_slope = 0;  // NaN with fewer than two measured lengths
};
// Per implementation of a `cerebra bench layers` results.json: measured points and fitted log–log slopes.
std::vector<ScalingFit> scaling_fits(const nlohmann::json& bench_layers_results);
// Writes scaling.csv and plots/scaling_time.{png,svg}, plots/scaling_memory.{png,svg}; returns the plot error
// (empty when drawn).
std::string write_scaling_outputs(const std::string& dir, bool plots);

// ---- Table 1 ---------------------------------------------------------------------------------------------------

struct Table1Options {
  std::string rows_file;  // manifest (YAML): rows with label, config, set, reference; `quick` overrides
  std::string out;
  bool quick = false;
  int64_t seeds = 0;  // 0 = the manifest's (3, quick: its quick.seeds)
  std::vector<std::pair<std::string, std::string>> overrides;  // applied to every row last (e.g. threads)
  bool quiet_runs = true;
  bool plots = true;
  RunFunction run;
};
// Plans the rows of the manifest (rows whose config is missing or invalid become unavailable with the reason),
// runs them through run_sweep and writes table1.md and table1.csv. Returns the sweep outcome.
SweepOutcome reproduce_table1(const Table1Options& options);
// The Markdown table of a table1 directory (also written to table1.md / table1.csv).
std::string table1_markdown(const SweepTable& table);

// ---- reports ---------------------------------------------------------------------------------------------------

// A Markdown report of a sweep, table1, `bench tasks` or `bench layers` directory, written to <dir>/report.md
// (plots drawn or refreshed first when gnuplot is available). Returns the report text.
std::string write_report(const std::string& dir, bool plots = true);

}  // namespace exp
}  // namespace cerebra
