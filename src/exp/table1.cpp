// `cerebra reproduce table1`: the paper's Table 1 on the salary task, measured. Rows come from a YAML manifest
// (configs/table1/rows.yaml); the runs go through run_sweep, so they resume and aggregate like any sweep.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include "cerebra/exp/experiments.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace cerebra::exp {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

std::string scalar(const YAML::Node& n, const std::string& what) {
  if (!n.IsScalar()) throw ConfigError(what + ": expected a single value");
  return n.as<std::string>();
}

std::vector<std::pair<std::string, std::string>> overrides_of(const YAML::Node& n, const std::string& where) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!n) return out;
  if (!n.IsMap()) throw ConfigError(where + ": `set` must be a mapping of key: value");
  for (const auto& kv : n) out.emplace_back(kv.first.as<std::string>(), scalar(kv.second, where + " " + kv.first.as<std::string>()));
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}
std::string csv_num(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : std::string(); }

// Mean and sample std of a/b over runs, b fixed (e.g. relative FLOPs against the reference row's mean).
Stat scaled(const Stat& s, double by) {
  Stat r = s;
  if (!std::isfinite(by) || by == 0) return Stat{0, std::nan(""), std::nan("")};
  r.mean = s.mean / by;
  r.std = s.std / by;
  return r;
}

// The first sentence of an error (config errors append the list of every valid key), one line, bounded.
std::string short_reason(const std::string& s) {
  std::string r = s.substr(0, s.find('\n'));
  const auto valid = r.find(". Valid keys:");
  if (valid != std::string::npos) r = r.substr(0, valid);
  for (auto& c : r)
    if (c == '|') c = '/';
  return r.size() > 240 ? r.substr(0, 240) + "..." : r;
}

}  // namespace

SweepOutcome reproduce_table1(const Table1Options& o) {
  if (!fs::exists(o.rows_file)) throw ConfigError(o.rows_file + ": Table 1 manifest not found");
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(o.rows_file);
  } catch (const YAML::Exception& e) {
    throw ConfigError(o.rows_file + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
  if (!doc["rows"] || !doc["rows"].IsSequence() || doc["rows"].size() == 0)
    throw ConfigError(o.rows_file + ": expected a non-empty list `rows:`");
  const fs::path base_dir = fs::path(o.rows_file).parent_path();
  int64_t seeds = doc["seeds"] ? std::stoll(scalar(doc["seeds"], o.rows_file + " seeds")) : 3;
  std::vector<std::pair<std::string, std::string>> quick_set;
  if (o.quick) {
    const YAML::Node q = doc["quick"];
    if (q && q["seeds"]) seeds = std::stoll(scalar(q["seeds"], o.rows_file + " quick.seeds"));
    if (q) quick_set = overrides_of(q["set"], o.rows_file + " quick.set");
  }
  if (o.seeds > 0) seeds = o.seeds;

  std::vector<PlanPoint> points;
  std::string reference;
  for (size_t i = 0; i < doc["rows"].size(); ++i) {
    const YAML::Node r = doc["rows"][i];
    const std::string where = fmt::format("{} rows[{}]", o.rows_file, i);
    if (!r.IsMap() || !r["config"]) throw ConfigError(where + ": each row needs at least `config:`");
    PlanPoint p;
    const std::string cfg = scalar(r["config"], where + " config");
    p.name = r["id"] ? scalar(r["id"], where + " id") : fs::path(cfg).stem().string();
    p.label = r["label"] ? scalar(r["label"], where + " label") : p.name;
    p.series = p.label;
    p.params = {{"row", p.label}};
    if (r["reference"] && r["reference"].as<bool>()) reference = p.name;
    const fs::path cfg_path = fs::path(cfg).is_absolute() ? fs::path(cfg) : base_dir / cfg;
    try {
      if (!fs::exists(cfg_path)) throw ConfigError(cfg_path.lexically_normal().string() + " not found");
      p.config.load_yaml_file(cfg_path.string());
      for (const auto& [k, v] : overrides_of(r["set"], where + " set")) p.config.set(k, v, where + " set");
      for (const auto& [k, v] : quick_set) p.config.set(k, v, o.rows_file + " quick.set");
      if (o.quick)  // a row's own quick overrides (e.g. the full recipe's pruning epochs inside the short schedule)
        for (const auto& [k, v] : overrides_of(r["quick_set"], where + " quick_set")) p.config.set(k, v, where + " quick_set");
      for (const auto& [k, v] : o.overrides) p.config.set(k, v, "command line");
    } catch (const ConfigError& e) {
      p.unavailable = e.what();
    }
    points.push_back(std::move(p));
  }
  if (reference.empty()) reference = points.front().name;

  SweepOptions so;
  so.out = o.out;
  so.seeds = seeds;
  if (doc["title"])  // a manifest for another task names itself
    so.title = scalar(doc["title"], o.rows_file + " title") + (o.quick ? " (quick)" : "");
  else
    so.title = o.quick ? "Table 1 (quick), salary task" : "Table 1, salary task";
  so.quiet_runs = o.quiet_runs;
  so.plots = o.plots;
  so.run = o.run;
  so.extra = {{"table1", {{"reference", reference}, {"quick", o.quick}, {"manifest", o.rows_file}}}};
  SweepOutcome outcome = run_sweep(points, so);

  const SweepTable table = load_sweep(o.out);
  const std::string md = table1_markdown(table);
  std::ofstream(fs::path(o.out) / "table1.md") << md;
  return outcome;
}

std::string table1_markdown(const SweepTable& t) {
  const json info = t.plan.contains("extra") && t.plan["extra"].contains("table1") ? t.plan["extra"]["table1"] : json();
  const std::string reference = info.is_object() ? info.value("reference", "") : "";
  double ref_flops = std::nan("");
  std::string ref_label = reference;
  for (const auto& p : t.points)
    if (p.name == reference) {
      ref_flops = p.flops_realised.mean;
      ref_label = p.label;
    }
  json sample = json::object();
  for (const auto& r : t.runs)
    if (r.status == "ok") {
      sample = r.summary;
      break;
    }
  const int64_t seeds = t.plan.value("seeds", int64_t{0});
  std::string md = fmt::format("## {}\n\n", t.title);
  if (sample.contains("data") && !sample["data"].contains("rows"))  // a sequence task: examples, not rows
    md += fmt::format("Task {} (n = {}); {} training examples; metric {}; mean ± sample std over {} seed{}.\n",
                      sample.value("task", "?"), sample.contains("task_info") ? sample["task_info"].value("n", 0) : 0,
                      sample.contains("training") ? sample["training"].value("train_examples", 0) : 0,
                      metric_axis_label(t.metric, sample), seeds, seeds == 1 ? "" : "s");
  else if (sample.contains("data"))
    md += fmt::format("Task {}: {} rows ({} train, {} val, {} test); metric {}; mean ± sample std over {} seed{} "
                      "(seeds change the split, initialisation and order).\n",
                      sample.value("task", "?"), sample["data"].value("rows", 0), sample["data"].value("train", 0),
                      sample["data"].value("val", 0), sample["data"].value("test", 0),
                      metric_axis_label(t.metric, sample), seeds, seeds == 1 ? "" : "s");
  if (sample.contains("machine"))
    md += fmt::format("Machine: {}; threads={}; BLAS {}; LibTorch {}.\n", sample.value("machine", "?"),
                      sample.value("threads", 0), sample.value("blas", "?"), sample.value("torch_version", "?"));
  md += fmt::format("Relative FLOPs: realised forward FLOPs per example / those of {} (= 1.00).\n\n", ref_label);
  md += fmt::format("| Model | {} | Relative FLOPs | Realised FLOPs/example | Epoch time (s) | Peak tensor memory "
                    "(MiB) | Peak RSS (MiB) | Params | Seeds ok |\n",
                    t.metric.name);
  md += "|---|---|---|---|---|---|---|---|---|\n";
  std::ofstream csv(fs::path(t.dir) / "table1.csv");
  csv << "row,label,status," << t.metric.name << "_mean," << t.metric.name
      << "_std,relative_flops_mean,relative_flops_std,flops_realised_mean,epoch_seconds_mean,epoch_seconds_std,"
         "peak_tensor_mib_mean,peak_tensor_mib_std,peak_rss_mib_mean,params,seeds_ok,seeds_planned,note\n";
  for (const auto& p : t.points) {
    std::string note;
    if (!p.unavailable.empty())
      note = "unavailable: " + short_reason(p.unavailable);
    else if (p.n_ok == 0 && p.n_failed > 0)
      note = "failed: " + short_reason(p.errors.front());
    else if (p.n_ok == 0)
      note = "not run yet";
    else if (p.n_failed > 0)
      note = fmt::format("{} of {} seeds failed: {}", p.n_failed, p.n_runs, short_reason(p.errors.front()));
    const Stat rel = scaled(p.flops_realised, ref_flops);
    const Stat mt = scaled(p.peak_tensor_bytes, kMiB), mr = scaled(p.peak_rss_bytes, kMiB);
    if (p.n_ok == 0) {
      md += fmt::format("| {} | {} | | | | | | | 0/{} |\n", p.label, note, p.n_runs);
    } else {
      md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {:.0f} | {}/{}{} |\n", p.label,
                        format_stat(p.metric, 4), format_stat(rel, 2),
                        std::isfinite(p.flops_realised.mean) ? fmt::format("{:.4g}", p.flops_realised.mean) : "-",
                        format_stat(p.epoch_seconds, 2), format_stat(mt, 1), format_stat(mr, 0),
                        p.params_count.mean, p.n_ok, p.n_runs, note.empty() ? "" : " (" + note + ")");
    }
    csv << csv_field(p.name) << ',' << csv_field(p.label) << ','
        << (!p.unavailable.empty() ? "unavailable"
            : p.n_ok == 0          ? (p.n_failed > 0 ? "failed" : "missing")
            : p.n_ok == p.n_runs   ? "ok"
                                   : "partial")
        << ',' << csv_num(p.metric.mean) << ',' << csv_num(p.metric.std) << ',' << csv_num(rel.mean) << ','
        << csv_num(rel.std) << ',' << csv_num(p.flops_realised.mean) << ',' << csv_num(p.epoch_seconds.mean) << ','
        << csv_num(p.epoch_seconds.std) << ',' << csv_num(mt.mean) << ',' << csv_num(mt.std) << ','
        << csv_num(mr.mean) << ',' << csv_num(p.params_count.mean) << ',' << p.n_ok << ',' << p.n_runs << ','
        << csv_field(note) << '\n';
  }
  md += "\nEpoch time: median epoch wall-clock of each run, then mean ± std over seeds. Peak tensor memory: the\n"
        "counting CPU allocator's peak during the run; peak RSS: the process's VmHWM (reset per run).\n";
  return md;
}

}  // namespace cerebra::exp
