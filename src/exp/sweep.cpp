// Sweeps: a grid of config values × seeds, one run directory each, resumable, failures recorded, then aggregated.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <fmt/core.h>

#include "cerebra/exp/experiments.h"
#include "cerebra/core/io.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"

namespace fs = std::filesystem;

namespace cerebra::exp {

namespace {

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

// Characters safe in a directory name; anything else becomes '_'.
std::string dir_safe(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '+' ||
                           c == '=' || c == '_')
                              ? c
                              : '_';
  return out;
}



std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 90) return fmt::format("{:.0f}s", s);
  if (s < 5400) return fmt::format("{:.0f}m{:02.0f}s", std::floor(s / 60), std::fmod(s, 60));
  return fmt::format("{:.0f}h{:02.0f}m", std::floor(s / 3600), std::floor(std::fmod(s, 3600) / 60));
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

GridAxis parse_grid(const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos)
    throw ConfigError("--grid '" + text + "': expected KEY=V1,V2,... (e.g. lambda=0,1e-4,1e-3)");
  GridAxis axis;
  axis.key = trim(text.substr(0, eq));
  if (Config::find_key(axis.key) == nullptr) throw ConfigError("--grid: " + describe_unknown_key(axis.key));
  if (axis.key == "seed") throw ConfigError("--grid: seeds are set with --seeds, not swept as a grid key");
  std::stringstream ss(text.substr(eq + 1));
  std::set<std::string> seen;
  for (std::string v; std::getline(ss, v, ',');) {
    v = trim(v);
    if (v.empty()) continue;
    Config probe;
    probe.set(axis.key, v, "--grid " + axis.key);  // throws ConfigError naming the key and the expected type
    if (!seen.insert(v).second) throw ConfigError("--grid " + axis.key + ": value '" + v + "' given twice");
    axis.values.push_back(v);
  }
  if (axis.values.empty()) throw ConfigError("--grid '" + text + "': no values after '='");
  return axis;
}

std::vector<PlanPoint> grid_points(const Config& base, const std::vector<GridAxis>& axes,
                                   std::vector<std::string> series_keys) {
  std::set<std::string> keys;
  for (const auto& a : axes)
    if (!keys.insert(a.key).second) throw ConfigError("--grid: key '" + a.key + "' given twice");
  if (series_keys.empty()) {
    if (keys.count("model"))
      series_keys = {"model"};
    else
      for (size_t i = 1; i < axes.size(); ++i) series_keys.push_back(axes[i].key);
  }
  for (const auto& k : series_keys)
    if (Config::find_key(k) == nullptr) throw ConfigError("--series: " + describe_unknown_key(k));

  std::vector<PlanPoint> points;
  std::vector<size_t> idx(axes.size(), 0);
  while (true) {
    PlanPoint p;
    p.config = base;
    std::string name, label;
    for (size_t a = 0; a < axes.size(); ++a) {
      const auto& v = axes[a].values[idx[a]];
      p.config.set(axes[a].key, v, "--grid " + axes[a].key);
      p.params.emplace_back(axes[a].key, v);
      name += (name.empty() ? "" : "__") + dir_safe(axes[a].key + "=" + v);
      label += (label.empty() ? "" : " ") + axes[a].key + "=" + v;
    }
    p.name = name.empty() ? "base" : name;
    p.label = label.empty() ? "base" : label;
    if (series_keys.empty()) {
      p.series = parse_run_spec(p.config).model.name;
    } else {
      for (const auto& k : series_keys) {
        std::string v;
        for (const auto& [pk, pv] : p.params)
          if (pk == k) v = pv;
        if (v.empty()) v = p.config.to_json()[k].dump();
        if (!v.empty() && v.front() == '"') v = v.substr(1, v.size() - 2);
        p.series += (p.series.empty() ? "" : " ") + k + "=" + v;
      }
    }
    points.push_back(std::move(p));
    // odometer: last axis fastest
    size_t a = axes.size();
    while (a > 0) {
      --a;
      if (++idx[a] < axes[a].values.size()) break;
      idx[a] = 0;
      if (a == 0) return points;
    }
    if (axes.empty()) return points;
  }
}

std::pair<int64_t, int64_t> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  auto number = [&](const std::string& part) -> int64_t {
    const std::string t = trim(part);
    if (t.empty() || t.find_first_not_of("0123456789") != std::string::npos || t.size() > 9)
      throw ConfigError("--shard '" + text + "': expected i/N with whole numbers, e.g. 0/4 (shard 0 of 4)");
    return std::stoll(t);
  };
  if (slash == std::string::npos)
    throw ConfigError("--shard '" + text + "': expected i/N, e.g. 0/4 (shard 0 of 4; shards are 0 ... N-1)");
  const int64_t i = number(text.substr(0, slash)), n = number(text.substr(slash + 1));
  if (n < 1) throw ConfigError("--shard '" + text + "': the number of shards N must be at least 1");
  if (i >= n)
    throw ConfigError(fmt::format("--shard '{}': the index must be in 0..{} (shards are numbered from 0)", text, n - 1));
  return {i, n};
}

std::string shard_dir_name(int64_t index, int64_t count) { return fmt::format("shard-{}-of-{}", index, count); }

std::string run_dir_name(const PlanPoint& point, int64_t seed) { return point.name + "__seed=" + std::to_string(seed); }

bool run_complete(const std::string& run_dir, const Config& config) {
  return run_progress(config, run_dir).state == RunProgress::State::kFinished;
}

SweepOutcome run_sweep(const std::vector<PlanPoint>& points, const SweepOptions& options) {
  if (options.out.empty()) throw std::invalid_argument("sweep: no output directory");
  if (options.seeds < 1) throw std::invalid_argument("sweep: --seeds must be at least 1");
  if (options.shard_count < 1 || options.shard_index < 0 || options.shard_index >= options.shard_count)
    throw std::invalid_argument(fmt::format("sweep: shard {} of {} does not exist", options.shard_index,
                                            options.shard_count));
  if (!options.metric.empty()) parse_metric(options.metric);  // reject a bad direction before any run
  const fs::path out(options.out);
  fs::create_directories(out);

  struct Job {
    size_t point;
    int64_t seed;
    std::string dir;
    Config config;
    bool done, resume;
  };
  std::vector<Job> jobs;
  nlohmann::json plan_points = nlohmann::json::array(), plan_runs = nlohmann::json::array(),
                 all_runs = nlohmann::json::array();
  SweepOutcome outcome;
  std::set<std::string> names;
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i];
    if (!names.insert(p.name).second) throw std::invalid_argument("sweep: two points named '" + p.name + "'");
    nlohmann::json params = nlohmann::json::array();
    for (const auto& [k, v] : p.params) params.push_back({k, v});
    plan_points.push_back({{"name", p.name}, {"label", p.label}, {"series", p.series}, {"params", params},
                           {"unavailable", p.unavailable}});
    if (!p.unavailable.empty()) {
      ++outcome.unavailable;
      continue;
    }
    const auto base_seed = static_cast<int64_t>(parse_run_spec(p.config).trainer.seed);
    for (int64_t s = 0; s < options.seeds; ++s) {
      Job j{i, base_seed + s, run_dir_name(p, base_seed + s), p.config, false, false};
      const int64_t index = static_cast<int64_t>(all_runs.size());
      all_runs.push_back({{"point", p.name}, {"seed", j.seed}, {"dir", j.dir}});
      if (index % options.shard_count != options.shard_index) continue;  // another shard's run
      j.config.set("seed", std::to_string(j.seed), "sweep seed");
      const RunProgress::State state = run_progress(j.config, (out / j.dir).string()).state;
      j.done = state == RunProgress::State::kFinished;
      j.resume = state == RunProgress::State::kUnfinished;  // continues from its resume checkpoint
      plan_runs.push_back({{"point", p.name}, {"seed", j.seed}, {"dir", j.dir}});
      jobs.push_back(std::move(j));
    }
  }
  nlohmann::json plan = {{"kind", "sweep"},   {"title", options.title}, {"metric", options.metric},
                         {"seeds", options.seeds}, {"points", plan_points}, {"runs", plan_runs},
                         {"extra", options.extra}};
  if (options.shard_count > 1) {
    plan["shard"] = {{"index", options.shard_index}, {"count", options.shard_count}};
    plan["all_runs"] = all_runs;
  }
  write_text_file_atomic(out / "sweep.json", plan.dump(2) + "\n");

  outcome.total = static_cast<int64_t>(jobs.size());
  int64_t todo = 0;
  for (const auto& j : jobs) todo += j.done ? 0 : 1;
  outcome.skipped = outcome.total - todo;
  if (!options.quiet)
    std::cerr << fmt::format("sweep: {} points x {} seeds = {} runs{} in {}; {} already complete, {} to run{}\n",
                             points.size() - static_cast<size_t>(outcome.unavailable), options.seeds,
                             all_runs.size(),
                             options.shard_count > 1 ? fmt::format(", {} of them in shard {} of {}", outcome.total,
                                                                   options.shard_index, options.shard_count)
                                                     : "",
                             out.string(), outcome.skipped, todo,
                             outcome.unavailable ? fmt::format(" ({} points unavailable)", outcome.unavailable) : "");

  RunFunction run = options.run ? options.run : RunFunction([](const Config& c, const std::string& dir,
                                                                const RunOptions& ro) {
    return train_run(parse_run_spec(c), dir, ro);
  });
  double spent = 0;
  int64_t index = 0;
  for (const auto& j : jobs) {
    if (j.done) continue;
    ++index;
    const fs::path dir = out / j.dir;
    const auto& p = points[j.point];
    if (!options.quiet)
      std::cerr << fmt::format("sweep: run {}/{}: {} seed={} ...\n", index, todo, p.label, j.seed);
    fs::create_directories(dir);
    std::error_code ec;
    fs::remove(dir / "error.txt", ec);
    fs::remove(dir / "summary.json", ec);  // a stale summary of another config must not count as this run
    const auto t0 = std::chrono::steady_clock::now();
    std::string status;
    try {
      RunOptions ro;
      ro.quiet = options.quiet_runs;
      ro.resume = j.resume;
      nlohmann::json s = run(j.config, dir.string(), ro);
      ++outcome.ran;
      const std::string m = options.metric.empty() ? default_metric(s) : parse_metric(options.metric).name;
      const double v = summary_value(s, m);
      status = std::isfinite(v) ? fmt::format("{} {:.4g}", m, v) : "done";
    } catch (const std::exception& e) {
      ++outcome.ran;
      ++outcome.failed;
      std::ofstream(dir / "error.txt") << e.what() << "\n";
      status = "FAILED: " + first_line(e.what());
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    spent += secs;
    const double eta = spent / static_cast<double>(index) * static_cast<double>(todo - index);
    if (!options.quiet)
      std::cerr << fmt::format("sweep: run {}/{} {} seed={}: {} in {}; ETA {}\n", index, todo, p.label, j.seed,
                               status, duration(secs), index == todo ? "done" : duration(eta));
  }

  SweepTable table = load_sweep(out.string(), options.metric);
  outcome.plot_error = write_sweep_outputs(table, options.plots);
  if (!options.quiet) {
    std::cerr << fmt::format("sweep: {} runs: {} ran now ({} failed), {} reused; results in {}\n", outcome.total,
                             outcome.ran, outcome.failed, outcome.skipped, out.string());
    if (!outcome.plot_error.empty()) std::cerr << "sweep: plots not drawn: " << outcome.plot_error << "\n";
  }
  return outcome;
}

}  // namespace cerebra::exp
