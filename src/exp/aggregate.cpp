// Aggregation of a sweep directory over seeds, its tables, frontiers and plots; bench-layers scaling fits.
// No LibTorch.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>

#include <fmt/core.h>

#include "cerebra/exp/experiments.h"
#include "cerebra/core/io.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace cerebra::exp {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kMiB = 1024.0 * 1024.0;



std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_num(double v) { return std::isfinite(v) ? fmt::format("{:.8g}", v) : std::string(); }
json json_num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
json stat_json(const Stat& s) { return {{"n", s.n}, {"mean", json_num(s.mean)}, {"std", json_num(s.std)}}; }
std::string first_line(const std::string& s) {
  const std::string t = s.substr(0, s.find('\n'));
  return t.size() > 300 ? t.substr(0, 300) + "..." : t;
}

double ratio(double a, double b) { return std::isfinite(a) && std::isfinite(b) && b != 0 ? a / b : kNaN; }

}  // namespace

std::string metric_axis_label(const MetricSpec& metric, const json& sample) {
  std::string what;
  const std::string n = metric.name;
  if (sample.is_object() && sample.contains("target") && sample["target"].is_object() &&
      (n.find("rmse") != std::string::npos || n.find("mae") != std::string::npos) &&
      n.find("_raw") == std::string::npos) {
    const auto& t = sample["target"];
    const std::string col = t.value("column", "target");
    what = t.value("transform", "") == "log" ? "log " + col + "; " : col + " units; ";
  } else if (n.size() > 4 && n.substr(n.size() - 4) == "_raw" && sample.is_object() && sample.contains("target")) {
    what = sample["target"].value("column", "target") + " units; ";
  }
  return fmt::format("{} ({}{} is better)", n, what, metric.higher_is_better ? "higher" : "lower");
}

SweepTable load_sweep(const std::string& dir, const std::string& metric) {
  const fs::path d(dir);
  SweepTable t;
  t.dir = dir;
  t.plan = read_json_file(d / "sweep.json");
  if (!t.plan.contains("points") || !t.plan.contains("runs"))
    throw std::runtime_error((d / "sweep.json").string() + ": missing 'points' or 'runs' (not a sweep directory?)");
  t.title = t.plan.value("title", "sweep");

  std::map<std::string, size_t> point_index;
  for (const auto& p : t.plan["points"]) {
    PointStats ps;
    ps.name = p.value("name", "");
    ps.label = p.value("label", ps.name);
    ps.series = p.value("series", "");
    ps.unavailable = p.value("unavailable", "");
    if (p.contains("params") && p["params"].is_object())  // {"key": "value", ...}
      for (auto it = p["params"].begin(); it != p["params"].end(); ++it)
        ps.params.emplace_back(it.key(), it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
    else if (p.contains("params") && p["params"].is_array())  // [["key", "value"], ...] in grid order
      for (const auto& kv : p["params"])
        if (kv.is_array() && kv.size() == 2 && kv[0].is_string() && kv[1].is_string())
          ps.params.emplace_back(kv[0].get<std::string>(), kv[1].get<std::string>());
    point_index[ps.name] = t.points.size();
    t.points.push_back(std::move(ps));
  }
  for (const auto& r : t.plan["runs"]) {
    RunRecord rec;
    rec.point = r.value("point", "");
    rec.seed = r.value("seed", int64_t{0});
    rec.dir = r.value("dir", "");
    const fs::path rd = d / rec.dir;
    if (fs::exists(rd / "config.yaml")) rec.config_hash = fnv1a64_hex(read_text_file(rd / "config.yaml"));
    rec.status = "missing";
    if (fs::exists(rd / "summary.json")) {
      try {
        rec.summary = json::parse(read_text_file(rd / "summary.json"));
        if (rec.summary.is_object() && rec.summary.contains("metrics")) rec.status = "ok";
      } catch (const json::exception& e) {
        rec.error = "summary.json: " + std::string(e.what());
      }
    }
    if (rec.status != "ok" && fs::exists(rd / "error.txt")) {
      rec.status = "failed";
      rec.error = read_text_file(rd / "error.txt");
      while (!rec.error.empty() && rec.error.back() == '\n') rec.error.pop_back();
    }
    t.runs.push_back(std::move(rec));
  }

  std::string mtext = !metric.empty() ? metric : t.plan.value("metric", "");
  if (mtext.empty())
    for (const auto& r : t.runs)
      if (r.status == "ok" && (mtext = default_metric(r.summary)) != "") break;
  if (mtext.empty()) mtext = "test_rmse";
  t.metric = parse_metric(mtext);

  std::map<std::string, std::vector<const RunRecord*>> by_point;
  for (const auto& r : t.runs) by_point[r.point].push_back(&r);
  for (auto& ps : t.points) {
    std::vector<double> m, fr, fd, rel, es, ts, pt, pr, pc;
    for (const RunRecord* r : by_point[ps.name]) {
      ++ps.n_runs;
      if (r->status == "failed") {
        ++ps.n_failed;
        ps.errors.push_back(fmt::format("seed {}: {}", r->seed, first_line(r->error)));
      }
      if (r->status == "missing") ++ps.n_missing;
      if (r->status != "ok") continue;
      ++ps.n_ok;
      const json& s = r->summary;
      m.push_back(summary_value(s, t.metric.name));
      fr.push_back(summary_value(s, "flops.realised_per_example"));
      fd.push_back(summary_value(s, "flops.dense_transformer_per_example"));
      rel.push_back(ratio(fr.back(), fd.back()));
      es.push_back(summary_value(s, "time.epoch_seconds_median"));
      ts.push_back(summary_value(s, "time.train_seconds_total"));
      pt.push_back(summary_value(s, "memory.peak_tensor_bytes"));
      pr.push_back(summary_value(s, "memory.peak_rss_bytes"));
      pc.push_back(summary_value(s, "params"));
    }
    ps.metric = summarize(m);
    ps.flops_realised = summarize(fr);
    ps.flops_dense = summarize(fd);
    ps.relative_flops = summarize(rel);
    ps.epoch_seconds = summarize(es);
    ps.train_seconds = summarize(ts);
    ps.peak_tensor_bytes = summarize(pt);
    ps.peak_rss_bytes = summarize(pr);
    ps.params_count = summarize(pc);
  }

  std::vector<CostPoint> by_flops, by_time;
  for (const auto& ps : t.points) {
    by_flops.push_back({ps.flops_realised.mean, ps.metric.mean});
    by_time.push_back({ps.epoch_seconds.mean, ps.metric.mean});
  }
  for (size_t i : pareto_front(by_flops, t.metric.higher_is_better)) t.points[i].front_flops = true;
  for (size_t i : pareto_front(by_time, t.metric.higher_is_better)) t.points[i].front_time = true;
  return t;
}

namespace {

json sample_summary(const SweepTable& t) {
  for (const auto& r : t.runs)
    if (r.status == "ok") return r.summary;
  return json::object();
}

Figure frontier_figure(const SweepTable& t, bool flops) {
  Figure f;
  f.stem = flops ? "frontier_flops" : "frontier_time";
  const json sample = sample_summary(t);
  const int64_t seeds = t.plan.value("seeds", int64_t{0});
  f.title = fmt::format("{}: {} vs {} (mean ± std over {} seed{})", t.title, t.metric.name,
                        flops ? "realised FLOPs" : "epoch time", seeds, seeds == 1 ? "" : "s");
  f.ylabel = metric_axis_label(t.metric, sample);
  std::map<std::string, size_t> series_index;
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  std::vector<std::pair<double, double>> front;
  std::vector<double> front_x, front_y;
  for (const auto& ps : t.points) {
    const Stat& x = flops ? ps.flops_realised : ps.epoch_seconds;
    if (ps.n_ok == 0 || !std::isfinite(x.mean) || !std::isfinite(ps.metric.mean)) continue;
    auto it = series_index.find(ps.series);
    if (it == series_index.end()) {
      it = series_index.emplace(ps.series, f.series.size()).first;
      f.series.push_back(Series{ps.series.empty() ? "runs" : ps.series, {}, {}, {}, {}});
    }
    Series& s = f.series[it->second];
    s.x.push_back(x.mean);
    s.y.push_back(ps.metric.mean);
    s.x_err.push_back(x.std);
    s.y_err.push_back(ps.metric.std);
    lo = std::min(lo, x.mean);
    hi = std::max(hi, x.mean);
    if (flops ? ps.front_flops : ps.front_time) front.emplace_back(x.mean, ps.metric.mean);
  }
  std::sort(front.begin(), front.end());
  for (const auto& [x, y] : front) {
    f.frontier.x.push_back(x);
    f.frontier.y.push_back(y);
  }
  f.frontier.title = "Pareto frontier (non-dominated)";
  f.logx = lo > 0 && hi / lo > 20;
  if (flops && hi >= 1e4) f.xformat = "%.3g";  // large counts: short tics, rotated apart
  f.xlabel = flops ? "realised forward FLOPs per example (FLOPs" + std::string(f.logx ? ", log scale)" : ")")
                   : "median epoch wall-clock time (s" + std::string(f.logx ? ", log scale)" : ")");
  return f;
}

}  // namespace

std::string write_sweep_outputs(const SweepTable& t, bool plots) {
  const fs::path d(t.dir);
  const std::string& mn = t.metric.name;
  {
    std::ofstream csv(d / "runs.csv");
    csv << "point,seed,dir,status," << csv_field(mn)
        << ",flops_realised_per_example,epoch_seconds_median,train_seconds_total,peak_tensor_bytes,peak_rss_bytes,"
           "config_fnv1a64,error\n";
    for (const auto& r : t.runs) {
      csv << csv_field(r.point) << ',' << r.seed << ',' << csv_field(r.dir) << ',' << r.status << ','
          << csv_num(summary_value(r.summary, mn)) << ','
          << csv_num(summary_value(r.summary, "flops.realised_per_example")) << ','
          << csv_num(summary_value(r.summary, "time.epoch_seconds_median")) << ','
          << csv_num(summary_value(r.summary, "time.train_seconds_total")) << ','
          << csv_num(summary_value(r.summary, "memory.peak_tensor_bytes")) << ','
          << csv_num(summary_value(r.summary, "memory.peak_rss_bytes")) << ',' << r.config_hash << ','
          << csv_field(first_line(r.error)) << '\n';
    }
  }
  std::vector<std::string> keys;
  for (const auto& ps : t.points)
    for (const auto& [k, v] : ps.params)
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  json rows = json::array();
  {
    std::ofstream csv(d / "table.csv");
    csv << "point,label,series";
    for (const auto& k : keys) csv << ',' << csv_field(k);
    csv << ",runs,ok,failed,missing," << csv_field(mn + "_mean") << ',' << csv_field(mn + "_std")
        << ",flops_realised_mean,flops_realised_std,relative_flops_mean,relative_flops_std,epoch_seconds_mean,"
           "epoch_seconds_std,train_seconds_mean,peak_tensor_mib_mean,peak_tensor_mib_std,peak_rss_mib_mean,params,"
           "frontier_flops,frontier_time,status\n";
    for (const auto& ps : t.points) {
      csv << csv_field(ps.name) << ',' << csv_field(ps.label) << ',' << csv_field(ps.series);
      json params = json::object();
      for (const auto& k : keys) {
        std::string v;
        for (const auto& [pk, pv] : ps.params)
          if (pk == k) v = pv;
        csv << ',' << csv_field(v);
        params[k] = v;
      }
      const std::string status = !ps.unavailable.empty() ? "unavailable: " + ps.unavailable
                                 : ps.n_ok == 0 && ps.n_failed > 0 ? "failed"
                                 : ps.n_ok == 0                    ? "missing"
                                 : ps.n_ok < ps.n_runs             ? "partial"
                                                                   : "ok";
      csv << ',' << ps.n_runs << ',' << ps.n_ok << ',' << ps.n_failed << ',' << ps.n_missing << ','
          << csv_num(ps.metric.mean) << ',' << csv_num(ps.metric.std) << ',' << csv_num(ps.flops_realised.mean) << ','
          << csv_num(ps.flops_realised.std) << ',' << csv_num(ps.relative_flops.mean) << ','
          << csv_num(ps.relative_flops.std) << ',' << csv_num(ps.epoch_seconds.mean) << ','
          << csv_num(ps.epoch_seconds.std) << ',' << csv_num(ps.train_seconds.mean) << ','
          << csv_num(ps.peak_tensor_bytes.mean / kMiB) << ',' << csv_num(ps.peak_tensor_bytes.std / kMiB) << ','
          << csv_num(ps.peak_rss_bytes.mean / kMiB) << ',' << csv_num(ps.params_count.mean) << ','
          << (ps.front_flops ? 1 : 0) << ',' << (ps.front_time ? 1 : 0) << ',' << csv_field(status) << '\n';
      rows.push_back({{"point", ps.name},
                      {"label", ps.label},
                      {"series", ps.series},
                      {"params", params},
                      {"runs", ps.n_runs},
                      {"ok", ps.n_ok},
                      {"failed", ps.n_failed},
                      {"missing", ps.n_missing},
                      {"status", status},
                      {"errors", ps.errors},
                      {"metric", stat_json(ps.metric)},
                      {"flops_realised_per_example", stat_json(ps.flops_realised)},
                      {"flops_dense_transformer_per_example", stat_json(ps.flops_dense)},
                      {"relative_flops", stat_json(ps.relative_flops)},
                      {"epoch_seconds_median", stat_json(ps.epoch_seconds)},
                      {"train_seconds_total", stat_json(ps.train_seconds)},
                      {"peak_tensor_bytes", stat_json(ps.peak_tensor_bytes)},
                      {"peak_rss_bytes", stat_json(ps.peak_rss_bytes)},
                      {"params", stat_json(ps.params_count)},
                      {"frontier_flops", ps.front_flops},
                      {"frontier_time", ps.front_time}});
    }
  }
  const json metric_json = {{"name", mn}, {"higher_is_better", t.metric.higher_is_better}};
  std::ofstream(d / "table.json") << json{{"title", t.title}, {"metric", metric_json}, {"points", rows}}.dump(2)
                                  << "\n";
  {
    std::ofstream csv(d / "frontier.csv");
    csv << "frontier,point,label,series,cost," << csv_field(mn + "_mean") << ',' << csv_field(mn + "_std") << '\n';
    json fj = {{"metric", metric_json}, {"flops", json::array()}, {"time", json::array()}};
    for (int k = 0; k < 2; ++k) {
      std::vector<const PointStats*> front;
      for (const auto& ps : t.points)
        if (k == 0 ? ps.front_flops : ps.front_time) front.push_back(&ps);
      auto cost = [k](const PointStats* p) { return k == 0 ? p->flops_realised.mean : p->epoch_seconds.mean; };
      std::stable_sort(front.begin(), front.end(), [&](auto* a, auto* b) { return cost(a) < cost(b); });
      for (const auto* p : front) {
        const char* kind = k == 0 ? "flops_realised_per_example" : "epoch_seconds_median";
        csv << kind << ',' << csv_field(p->name) << ',' << csv_field(p->label) << ',' << csv_field(p->series) << ','
            << csv_num(cost(p)) << ',' << csv_num(p->metric.mean) << ',' << csv_num(p->metric.std) << '\n';
        fj[k == 0 ? "flops" : "time"].push_back({{"point", p->name},
                                                 {"label", p->label},
                                                 {"series", p->series},
                                                 {"cost", json_num(cost(p))},
                                                 {"metric", stat_json(p->metric)}});
      }
    }
    std::ofstream(d / "frontier.json") << fj.dump(2) << "\n";
  }
  if (!plots) return "";
  std::string err;
  for (bool flops : {true, false}) {
    try {
      draw_figure((d / "plots").string(), frontier_figure(t, flops));
    } catch (const std::exception& e) {
      if (err.empty()) err = e.what();
    }
  }
  return err;
}

// ---- bench layers scaling --------------------------------------------------------------------------------------

std::vector<ScalingFit> scaling_fits(const json& doc) {
  if (!doc.is_object() || !doc.contains("results") || !doc["results"].is_array())
    throw std::runtime_error("bench layers results: missing 'results' array");
  std::vector<ScalingFit> fits;
  std::map<std::string, size_t> index;
  for (const auto& r : doc["results"]) {
    const std::string impl = r.value("impl", "");
    if (!index.count(impl)) {
      index[impl] = fits.size();
      fits.push_back(ScalingFit{impl, {}, {}, {}, kNaN, kNaN});
    }
    if (r.value("status", "") != "ok") continue;
    auto& f = fits[index[impl]];
    f.n.push_back(r.value("n", 0.0));
    f.ms.push_back(r.value("ms", kNaN));
    f.peak_mib.push_back(r.value("peak_mib", kNaN));
  }
  for (auto& f : fits) {
    f.time_slope = loglog_slope(f.n, f.ms);
    f.memory_slope = loglog_slope(f.n, f.peak_mib);
  }
  return fits;
}

std::string write_scaling_outputs(const std::string& dir, bool plots) {
  const fs::path d(dir);
  const json doc = read_json_file(d / "results.json");
  const auto fits = scaling_fits(doc);
  {
    std::ofstream csv(d / "scaling.csv");
    csv << "impl,lengths_measured,n_min,n_max,time_slope,memory_slope\n";
    json j = json::array();
    for (const auto& f : fits) {
      const double nmin = f.n.empty() ? kNaN : *std::min_element(f.n.begin(), f.n.end());
      const double nmax = f.n.empty() ? kNaN : *std::max_element(f.n.begin(), f.n.end());
      csv << csv_field(f.impl) << ',' << f.n.size() << ',' << csv_num(nmin) << ',' << csv_num(nmax) << ','
          << csv_num(f.time_slope) << ',' << csv_num(f.memory_slope) << '\n';
      j.push_back({{"impl", f.impl},
                   {"n", f.n},
                   {"ms", f.ms},
                   {"peak_mib", f.peak_mib},
                   {"time_slope", json_num(f.time_slope)},
                   {"memory_slope", json_num(f.memory_slope)}});
    }
    std::ofstream(d / "scaling.json")
        << json{{"fit", "least squares of log y on log n over the measured lengths"}, {"impls", j}}.dump(2) << "\n";
  }
  if (!plots) return "";
  const std::string shape = fmt::format("d={} batch={} threads={}", doc["results"].empty() ? 0 : doc["results"][0].value("d", 0),
                                        doc["results"].empty() ? 0 : doc["results"][0].value("batch", 0),
                                        doc.value("threads", 0));
  std::string err;
  for (bool time : {true, false}) {
    Figure f;
    f.stem = time ? "scaling_time" : "scaling_memory";
    f.title = fmt::format("One layer fwd+bwd ({}): {} vs n; slope = log-log least squares", shape,
                          time ? "time" : "peak memory");
    f.xlabel = "sequence length n (tokens, log scale)";
    f.ylabel = time ? "median forward + backward step time (ms, log scale)"
                    : "peak tensor memory above baseline (MiB, log scale)";
    f.logx = f.logy = true;
    f.lines = true;
    for (const auto& fit : fits) {
      Series s;
      const double slope = time ? fit.time_slope : fit.memory_slope;
      s.title = std::isfinite(slope) ? fmt::format("{} (slope {:.2f})", fit.impl, slope)
                                     : fmt::format("{} (slope n/a)", fit.impl);
      for (size_t i = 0; i < fit.n.size(); ++i) {
        const double y = time ? fit.ms[i] : fit.peak_mib[i];
        if (!(y > 0)) continue;
        s.x.push_back(fit.n[i]);
        s.y.push_back(y);
      }
      f.series.push_back(std::move(s));
    }
    try {
      draw_figure((d / "plots").string(), f);
    } catch (const std::exception& e) {
      if (err.empty()) err = e.what();
    }
  }
  return err;
}

}  // namespace cerebra::exp
