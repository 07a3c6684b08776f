// `cerebra report DIR`: a Markdown report of a sweep / table1, `bench tasks` or `bench layers` directory.
// No LibTorch.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/core.h>

#include "cerebra/exp/experiments.h"
#include "cerebra/core/io.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace cerebra::exp {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;


std::string md_cell(std::string s) {  // one line, pipes escaped
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out.size() > 200 ? out.substr(0, 200) + "..." : out;
}

std::string num(double v, const char* spec = "{:.4g}") {
  return std::isfinite(v) ? fmt::format(fmt::runtime(spec), v) : std::string("-");
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

// Distinct values of the environment fields over run summaries (or any JSON objects with those keys).
std::string environment(const std::vector<json>& docs) {
  std::string out;
  for (const auto& [key, title] : std::vector<std::pair<std::string, std::string>>{
           {"machine", "Machine"}, {"threads", "Threads"}, {"blas", "BLAS"}, {"torch_version", "LibTorch"},
           {"torch", "LibTorch"}}) {
    std::set<std::string> values;
    for (const auto& d : docs)
      if (d.is_object() && d.contains(key)) values.insert(d[key].is_string() ? d[key].get<std::string>() : d[key].dump());
    if (values.empty()) continue;
    std::string v;
    for (const auto& x : values) v += (v.empty() ? "" : "; ") + (x.empty() ? std::string("(none)") : x);
    out += fmt::format("- {}: {}{}\n", title, v, values.size() > 1 ? " (differs between runs!)" : "");
  }
  return out.empty() ? "- (no run recorded its environment)\n" : out;
}

std::string plot_links(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& stems,
                       const std::string& plot_error) {
  std::string md;
  for (const auto& [stem, caption] : stems) {
    if (fs::exists(fs::path(dir) / "plots" / (stem + ".png")))
      md += fmt::format("![{}](plots/{}.png)\n\n{} ([SVG](plots/{}.svg), [data](plots/{}.dat), "
                        "[gnuplot script](plots/{}.gp))\n\n",
                        caption, stem, caption, stem, stem, stem);
  }
  if (!plot_error.empty()) md += "Plots were not drawn: " + md_cell(plot_error) + "\n\n";
  return md;
}

// ---- sweep and table1 ------------------------------------------------------------------------------------------

std::string sweep_report(const std::string& dir, bool plots) {
  const SweepTable t = load_sweep(dir);
  const std::string plot_error = write_sweep_outputs(t, plots);
  std::vector<json> summaries;
  for (const auto& r : t.runs)
    if (r.status == "ok") summaries.push_back(r.summary);
  const json sample = summaries.empty() ? json::object() : summaries.front();

  std::string md = fmt::format("# {}\n\nDirectory `{}`, report written {}.\n\n## Environment\n\n{}", t.title, dir,
                               now_utc(), environment(summaries));
  md += "\n## Plan\n\n";
  md += fmt::format("- Metric: {}\n", metric_axis_label(t.metric, sample));
  md += fmt::format("- Seeds per point: {} (the run's `seed` key, then +1, +2, ...)\n", t.plan.value("seeds", 0));
  md += fmt::format("- Points: {}; runs planned: {}\n", t.points.size(), t.runs.size());
  if (t.plan.contains("merged_shards")) {
    std::string subs;
    for (const auto& s : t.plan["merged_shards"]["directories"]) subs += (subs.empty() ? "`" : ", `") + s.get<std::string>() + "`";
    md += fmt::format("- Sharded (`cerebra sweep --shard i/N`): {} of {} shards merged ({})\n",
                      t.plan["merged_shards"]["directories"].size(), t.plan["merged_shards"].value("count", 0), subs);
  }
  if (t.plan.contains("extra") && t.plan["extra"].contains("command"))
    md += fmt::format("- Command: `{}`\n", t.plan["extra"]["command"].get<std::string>());
  int64_t ok = 0, failed = 0, missing = 0;
  std::set<std::string> hashes;
  for (const auto& r : t.runs) {
    ok += r.status == "ok";
    failed += r.status == "failed";
    missing += r.status == "missing";
    if (!r.config_hash.empty()) hashes.insert(r.config_hash);
  }
  md += fmt::format("- Runs: {} ok, {} failed, {} missing (not run or interrupted); {} distinct configs\n", ok, failed,
                    missing, hashes.size());
  if (t.plan.contains("extra") && t.plan["extra"].contains("table1")) md += "\n" + table1_markdown(t);

  md += fmt::format("\n## Results per point (mean ± sample std over seeds)\n\n| Point | Series | Runs ok | {} | "
                    "Realised FLOPs/example | Relative FLOPs | Epoch time (s) | Peak tensor (MiB) | Pareto (FLOPs / "
                    "time) |\n|---|---|---|---|---|---|---|---|---|\n",
                    t.metric.name);
  for (const auto& p : t.points) {
    if (!p.unavailable.empty()) {
      md += fmt::format("| {} | {} | unavailable: {} | | | | | | |\n", md_cell(p.label), md_cell(p.series),
                        md_cell(p.unavailable));
      continue;
    }
    Stat mem = p.peak_tensor_bytes;
    mem.mean /= kMiB;
    mem.std /= kMiB;
    md += fmt::format("| {} | {} | {}/{}{} | {} | {} | {} | {} | {} | {} / {} |\n", md_cell(p.label),
                      md_cell(p.series), p.n_ok, p.n_runs, p.n_failed ? fmt::format(" ({} failed)", p.n_failed) : "",
                      format_stat(p.metric, 4), num(p.flops_realised.mean), format_stat(p.relative_flops, 3),
                      format_stat(p.epoch_seconds, 2), format_stat(mem, 1), p.front_flops ? "yes" : "no",
                      p.front_time ? "yes" : "no");
  }
  md += "\nRelative FLOPs: realised / `flops.dense_transformer_per_example` of the same run (a dense Transformer of "
        "the same shape for Cerebra; for other models their own analytic FLOPs, hence 1).\n";
  for (int k = 0; k < 2; ++k) {
    md += k == 0 ? "\n## Pareto frontier: metric vs realised FLOPs per example\n\n"
                 : "\n## Pareto frontier: metric vs median epoch time\n\n";
    std::vector<const PointStats*> f;
    for (const auto& p : t.points)
      if (k == 0 ? p.front_flops : p.front_time) f.push_back(&p);
    auto cost = [k](const PointStats* p) { return k == 0 ? p->flops_realised.mean : p->epoch_seconds.mean; };
    std::stable_sort(f.begin(), f.end(), [&](auto* a, auto* b) { return cost(a) < cost(b); });
    if (f.empty()) md += "(no finished points with this cost)\n";
    for (const auto* p : f)
      md += fmt::format("- {} ({}): {} = {} at {} {}\n", p->label, p->series, t.metric.name, format_stat(p->metric, 4),
                        num(cost(p)), k == 0 ? "FLOPs/example" : "s/epoch");
  }
  md += "\n## Plots\n\n" +
        plot_links(dir, {{"frontier_flops", "Metric vs realised FLOPs per example, Pareto frontier dashed"},
                         {"frontier_time", "Metric vs median epoch time, Pareto frontier dashed"}},
                   plot_error);
  md += fmt::format("## Runs\n\nConfig hash: FNV-1a 64 of each run's config.yaml (the fully resolved config).\n\n"
                    "| Run directory | Seed | Status | {} | Config hash | Error |\n|---|---|---|---|---|---|\n",
                    t.metric.name);
  for (const auto& r : t.runs)
    md += fmt::format("| `{}` | {} | {} | {} | `{}` | {} |\n", r.dir, r.seed, r.status,
                      num(summary_value(r.summary, t.metric.name), "{:.5g}"), r.config_hash,
                      md_cell(r.error.substr(0, r.error.find('\n'))));
  md += "\nTables: `table.csv`, `table.json`, `runs.csv`, `frontier.csv`, `frontier.json`.\n";
  return md;
}

// ---- bench layers ----------------------------------------------------------------------------------------------

std::string bench_layers_report(const std::string& dir, const json& doc, bool plots) {
  std::string plot_error;
  try {
    plot_error = write_scaling_outputs(dir, plots);
  } catch (const std::exception& e) {
    plot_error = e.what();
  }
  const auto fits = scaling_fits(doc);
  std::string md = fmt::format("# Layer scaling (`cerebra bench layers`)\n\nDirectory `{}`, report written {}.\n\n"
                               "## Environment\n\n{}- GEMM peak: {} GFLOP/s (n = {})\n- Timed steps per point: {} "
                               "(median)\n- GFLOP/s formula: {}\n",
                               dir, now_utc(), environment({doc}), num(doc.value("gemm_gflops", std::nan("")), "{:.1f}"),
                               doc.value("gemm_n", 0), doc.value("repeats", 0), doc.value("gflops_formula", "?"));
  md += "\n## Fitted growth exponents\n\nLeast-squares slope of log(time) and log(peak memory) on log(n) over the "
        "measured lengths (1 = linear, 2 = quadratic).\n\n| Implementation | Lengths measured | Time slope | Memory "
        "slope |\n|---|---|---|---|\n";
  for (const auto& f : fits) {
    std::string ns;
    for (double n : f.n) ns += (ns.empty() ? "" : ", ") + fmt::format("{:.0f}", n);
    md += fmt::format("| {} | {} | {} | {} |\n", f.impl, ns.empty() ? "none" : ns, num(f.time_slope, "{:.2f}"),
                      num(f.memory_slope, "{:.2f}"));
  }
  md += "\n## Measurements\n\n| Implementation | n | Status | ms | tokens/s | GFLOP/s | % GEMM peak | Peak MiB | Note "
        "|\n|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : doc["results"])
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r.value("impl", ""), r.value("n", 0),
                      r.value("status", ""), num(r.value("ms", std::nan("")), "{:.2f}"),
                      num(r.value("tokens_per_s", std::nan("")), "{:.0f}"), num(r.value("gflops", std::nan("")), "{:.2f}"),
                      num(r.value("pct_gemm_peak", std::nan("")), "{:.1f}"),
                      num(r.value("peak_mib", std::nan("")), "{:.1f}"), md_cell(r.value("reason", "")));
  md += "\n## Plots\n\n" + plot_links(dir, {{"scaling_time", "Step time vs n (log-log), fitted slope in the legend"},
                                            {"scaling_memory", "Peak tensor memory vs n (log-log), fitted slope in the legend"}},
                                      plot_error);
  md += "Tables: `results.csv`, `results.json`, `scaling.csv`, `scaling.json`.\n";
  return md;
}

// ---- bench tasks -----------------------------------------------------------------------------------------------

std::string bench_tasks_report(const std::string& dir, const json& rows, bool plots) {
  std::vector<json> docs(rows.begin(), rows.end());
  const json sample = docs.empty() ? json::object() : docs.front();
  const MetricSpec metric = parse_metric(default_metric(sample).empty() ? "test_rmse" : default_metric(sample));
  std::string md = fmt::format("# Task comparison (`cerebra bench tasks`)\n\nDirectory `{}`, report written {}.\n\n"
                               "## Environment\n\n{}",
                               dir, now_utc(), environment(docs));
  if (sample.contains("data"))
    md += fmt::format("- Task {}: {} rows ({} train, {} val, {} test)\n", sample.value("task", "?"),
                      sample["data"].value("rows", 0), sample["data"].value("train", 0),
                      sample["data"].value("val", 0), sample["data"].value("test", 0));
  md += fmt::format("\n## Results (one run per model)\n\n| Model | {} | Params | Realised FLOPs/example | Measured "
                    "FLOPs/example | Epoch time (s) | Peak tensor (MiB) | Peak RSS (MiB) | Config hash |\n"
                    "|---|---|---|---|---|---|---|---|---|\n",
                    metric_axis_label(metric, sample));
  Figure fig;
  fig.stem = "frontier_flops";
  fig.title = "bench tasks: " + metric.name + " vs realised FLOPs per example";
  fig.xlabel = "realised forward FLOPs per example (FLOPs, log scale)";
  fig.ylabel = metric_axis_label(metric, sample);
  fig.logx = true;
  fig.xformat = "%.3g";
  std::vector<CostPoint> pts;
  for (const auto& r : docs) {
    const std::string model = r.value("model", "?");
    const fs::path cfg = fs::path(dir) / model / "config.yaml";
    const std::string hash = fs::exists(cfg) ? fnv1a64_hex(read_text_file(cfg)) : "-";
    const double m = summary_value(r, metric.name), fr = summary_value(r, "flops.realised_per_example");
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | `{}` |\n", model, num(m, "{:.4f}"),
                      num(summary_value(r, "params"), "{:.0f}"), num(fr),
                      num(summary_value(r, "flops.measured_forward_per_example")),
                      num(summary_value(r, "time.epoch_seconds_median"), "{:.2f}"),
                      num(summary_value(r, "memory.peak_tensor_bytes") / kMiB, "{:.1f}"),
                      num(summary_value(r, "memory.peak_rss_bytes") / kMiB, "{:.0f}"), hash);
    pts.push_back({fr, m});
    if (std::isfinite(fr) && fr > 0 && std::isfinite(m)) fig.series.push_back(Series{model, {fr}, {m}, {}, {}});
  }
  std::vector<std::pair<double, double>> front;
  for (size_t i : pareto_front(pts, metric.higher_is_better))
    if (pts[i].cost > 0) front.emplace_back(pts[i].cost, pts[i].value);
  std::sort(front.begin(), front.end());
  for (const auto& [x, y] : front) {
    fig.frontier.x.push_back(x);
    fig.frontier.y.push_back(y);
  }
  std::string plot_error;
  if (plots && !fig.series.empty()) {
    try {
      draw_figure((fs::path(dir) / "plots").string(), fig);
    } catch (const std::exception& e) {
      plot_error = e.what();
    }
  }
  md += "\nModels without realised FLOPs (trees) are not plotted. Single runs: no seed statistics.\n\n## Plots\n\n" +
        plot_links(dir, {{"frontier_flops", "Metric vs realised FLOPs per example, Pareto frontier dashed"}},
                   plot_error);
  md += "Tables: `results.csv`, `results.json`, `results.txt`.\n";
  return md;
}

}  // namespace

bool merge_sweep_shards(const std::string& dir, std::vector<std::string>* notes) {
  const fs::path d(dir);
  struct Shard {
    std::string sub;
    json plan;
  };
  std::vector<Shard> shards;
  if (fs::is_directory(d))
    for (const auto& e : fs::directory_iterator(d)) {
      const std::string name = e.path().filename().string();
      if (!e.is_directory() || name.rfind("shard-", 0) != 0 || !fs::exists(e.path() / "sweep.json")) continue;
      json plan = read_json_file(e.path() / "sweep.json");
      if (!plan.contains("shard") || !plan.contains("all_runs")) continue;
      shards.push_back({name, std::move(plan)});
    }
  if (shards.empty()) return false;
  std::sort(shards.begin(), shards.end(), [](const Shard& a, const Shard& b) {
    return a.plan["shard"].value("index", 0) < b.plan["shard"].value("index", 0);
  });
  const Shard& first = shards.front();
  const int64_t count = first.plan["shard"].value("count", int64_t{0});
  std::map<int64_t, std::string> by_index;
  for (const auto& s : shards) {
    for (const char* key : {"points", "all_runs", "seeds", "metric"})
      if (s.plan.value(key, json()) != first.plan.value(key, json()))
        throw std::runtime_error(fmt::format("report: {}/{} is a shard of another sweep: its plan's '{}' differs "
                                             "from {}'s",
                                             dir, s.sub, key, first.sub));
    const int64_t c = s.plan["shard"].value("count", int64_t{0}), i = s.plan["shard"].value("index", int64_t{-1});
    if (c != count)
      throw std::runtime_error(fmt::format("report: {} has shards of {} and of {} ({} and {}); shard a sweep one way",
                                           dir, count, c, first.sub, s.sub));
    if (!by_index.emplace(i, s.sub).second)
      throw std::runtime_error(fmt::format("report: {} and {} are both shard {} of {}", by_index[i], s.sub, i, count));
  }
  // Every planned run, pointing into the shard that holds it.
  std::map<std::string, std::string> where;  // run dir -> shard subdirectory
  for (const auto& s : shards)
    for (const auto& r : s.plan["runs"]) {
      const std::string rd = r.value("dir", "");
      if (!where.emplace(rd, s.sub).second)
        throw std::runtime_error(fmt::format("report: run {} is planned in both {} and {}", rd, where[rd], s.sub));
    }
  json merged = first.plan;
  merged.erase("shard");
  merged.erase("all_runs");
  merged["title"] = first.plan.value("title", "sweep");
  json runs = json::array();
  for (auto r : first.plan["all_runs"]) {
    const std::string rd = r.value("dir", "");
    if (where.count(rd)) r["dir"] = where[rd] + "/" + rd;
    runs.push_back(r);
  }
  merged["runs"] = runs;
  json found = json::array();
  for (const auto& [i, sub] : by_index) found.push_back(sub);
  merged["merged_shards"] = {{"count", count}, {"directories", found}};
  if (notes)
    for (int64_t i = 0; i < count; ++i)
      if (!by_index.count(i))
        notes->push_back(fmt::format("{} is not in {}: its runs are reported missing", shard_dir_name(i, count), dir));
  write_text_file_atomic(d / "sweep.json", merged.dump(2) + "\n");
  return true;
}

std::string write_report(const std::string& dir, bool plots) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) throw std::runtime_error("report: directory '" + dir + "' not found");
  std::string md;
  std::vector<std::string> notes;
  if (merge_sweep_shards(dir, &notes)) {  // the shards of a sweep (cerebra sweep --shard i/N): one table
    for (const auto& n : notes) std::cerr << "report: " << n << "\n";
    md = sweep_report(dir, plots);
  } else if (fs::exists(d / "sweep.json")) {
    md = sweep_report(dir, plots);
  } else if (fs::exists(d / "results.json")) {
    json doc;
    try {
      doc = json::parse(read_text_file(d / "results.json"));
    } catch (const json::exception& e) {
      throw std::runtime_error((d / "results.json").string() + ": invalid JSON: " + e.what());
    }
    if (doc.is_object() && doc.contains("results"))
      md = bench_layers_report(dir, doc, plots);
    else if (doc.is_array())
      md = bench_tasks_report(dir, doc, plots);
    else
      throw std::runtime_error((d / "results.json").string() +
                               ": neither `bench layers` output (an object with 'results') nor `bench tasks` output "
                               "(an array of run summaries)");
  } else {
    throw std::runtime_error("report: " + dir +
                             " holds neither sweep.json (cerebra sweep / reproduce) nor results.json (cerebra bench "
                             "tasks / bench layers)");
  }
  std::ofstream out(d / "report.md");
  if (!out) throw std::runtime_error("cannot write " + (d / "report.md").string());
  out << md;
  return md;
}

}  // namespace cerebra::exp
