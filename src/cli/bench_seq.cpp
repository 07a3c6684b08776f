// `cerebra bench tasks` on a sequence task: every model at a matched parameter budget, trained with the same
// config, compared on the task metric, parameters, realised FLOPs per token, wall-clock and peak memory. Models
// whose estimated training memory exceeds the limit, or that cannot run the task (no causal form for a causal LM),
// are skipped with a message. With --lr-sweep each model trains at each learning rate and its learning rate with the
// best validation metric is selected (results.csv lists every learning rate, with selected); with --seeds each
// point trains once per seed and is reported as mean ± std (runs.csv lists every run). A run directory that already
// holds the finished run of the same config is read back, an unfinished one continues: an interrupted bench resumes. Writes results.{csv,json,txt}
// and results.{png,svg} (gnuplot; one point per model, its selected run).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>

#include <fmt/core.h>

#include "cerebra/core/config.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/exp/experiments.h"
#include "cerebra/cli/bench_seq.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/train.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {

int64_t params_at(Config c, int64_t d, const TaskInfo& info) {
  c.set("d_model", std::to_string(d), "--budget-params");
  torch::NoGradGuard g;
  return make_model(parse_run_spec(c).model, info)->parameter_count();
}

std::string num(const nlohmann::json& v, const char* spec) {
  return v.is_number() ? fmt::format(fmt::runtime(spec), v.get<double>()) : std::string("-");
}

std::string csv_num(const nlohmann::json& v) { return v.is_number() ? v.dump() : std::string(""); }

void write_plot(const fs::path& dir, const std::string& task, const std::string& metric, int64_t n,
                const std::vector<nlohmann::json>& rows) {
  std::ofstream dat(dir / "results.dat");
  dat << "# model realised_flops_per_token " << metric << "\n";
  int points = 0;
  for (const auto& r : rows)
    if (r["status"] == "ok" && r["metric"].is_number() && r["realised_flops_per_token"].is_number()) {
      dat << r["model"].get<std::string>() << " " << r["realised_flops_per_token"].get<double>() << " "
          << r["metric"].get<double>() << "\n";
      ++points;
    }
  dat.close();
  if (points == 0) return;
  const std::string title = fmt::format("{} (n = {}): {} vs realised FLOPs per token", task, n, metric);
  std::string body =
      "set title '" + title + "' noenhanced\nset xlabel 'realised forward FLOPs per token (log scale)'\n"
      "set ylabel '" + metric + "' noenhanced\nset logscale x\nset grid\nset key off\nset offsets graph 0.1, graph 0.1, "
      "graph 0.1, graph 0.1\nplot 'results.dat' using 2:3 with points pt 7 ps 1.5, '' using 2:3:1 with labels "
      "offset char 0,1 noenhanced\n";
  std::ofstream(dir / "results.gp") << "set terminal pngcairo size 900,600\nset output 'results.png'\n" << body
                                    << "set terminal svg size 900,600\nset output 'results.svg'\nreplot\n";
  const std::string cmd = "cd '" + dir.string() + "' && gnuplot results.gp 2>gnuplot.log";
  if (std::system(cmd.c_str()) != 0)
    std::cerr << fmt::format("warning: gnuplot failed (see {}/gnuplot.log); the data is in results.dat and "
                             "results.gp\n", dir.string());
}

}  // namespace

int64_t match_d_model(const Config& c, const TaskInfo& info, int64_t budget) {
  const int64_t step = 2 * std::max<int64_t>(1, parse_run_spec(c).model.backbone.mixer_options.n_heads);
  int64_t lo = 1, hi = std::max<int64_t>(1, 2048 / step);
  while (lo < hi) {  // smallest k with params(k·step) >= budget (params grow with d)
    const int64_t mid = (lo + hi) / 2;
    if (params_at(c, mid * step, info) >= budget) hi = mid;
    else lo = mid + 1;
  }
  int64_t best = lo;
  if (lo > 1 && std::llabs(params_at(c, (lo - 1) * step, info) - budget) <= std::llabs(params_at(c, lo * step, info) - budget))
    best = lo - 1;
  return best * step;
}

std::vector<double> parse_lr_sweep(const std::string& list) {
  std::vector<double> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) continue;
    item = item.substr(b, e - b + 1);
    size_t used = 0;
    double v = std::nan("");
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !(v > 0) || !std::isfinite(v))
      throw ConfigError(fmt::format("--lr-sweep: '{}' is not a learning rate > 0 (expected e.g. 1e-3,3e-3,1e-2)", item));
    out.push_back(v);
  }
  if (out.empty()) throw ConfigError("--lr-sweep: no learning rates given (expected e.g. 1e-3,3e-3,1e-2)");
  return out;
}

int64_t select_best_run(const std::vector<double>& val_metric, bool higher_is_better) {
  int64_t best = -1;
  for (size_t i = 0; i < val_metric.size(); ++i) {
    const double v = val_metric[i];
    if (std::isnan(v)) continue;
    if (best < 0 || (higher_is_better ? v > val_metric[best] : v < val_metric[best])) best = static_cast<int64_t>(i);
  }
  return best;
}

namespace {

// A model's own settings as text: "short_conv=0 lr=1" (results.json) or "short_conv 0, lr 1" (the table's note).
std::string model_set_text(const std::vector<std::pair<std::string, std::string>>& kv, const char* between,
                           const char* sep) {
  std::string out;
  for (const auto& [k, v] : kv) out += (out.empty() ? "" : sep) + k + between + v;
  return out;
}

// "0.9876" for one seed, "0.9876 ± 0.0012" for several; "-" when there is no value.
std::string stat_text(const nlohmann::json& mean, const nlohmann::json& std_dev, const char* spec) {
  if (!mean.is_number()) return "-";
  std::string out = fmt::format(fmt::runtime(spec), mean.get<double>());
  if (std_dev.is_number()) out += " ± " + fmt::format(fmt::runtime(spec), std_dev.get<double>());
  return out;
}

// One training run of a (model, learning rate) point: a run finished before with this config is read back, an
// unfinished one continues from its checkpoint, a run directory of another config starts over.
nlohmann::json train_or_reuse(const RunSpec& spec, const fs::path& dir, const SeqBenchOptions& o) {
  const RunProgress progress = run_progress(spec.config, dir.string());
  RunOptions options;
  options.quiet = o.quiet || o.quiet_runs;
  options.resume = progress.state == RunProgress::State::kFinished ||
                   progress.state == RunProgress::State::kUnfinished;
  if (progress.state == RunProgress::State::kFinished && !o.quiet)
    std::cerr << fmt::format("   reusing the finished run in {}\n", dir.string());
  return train_run(spec, dir.string(), options);
}

// The runs of one (model, learning rate) point: its config, and per summary quantity one value per finished seed.
struct PointRuns {
  Config config;
  std::map<std::string, std::vector<double>> values;
  nlohmann::json seeds = nlohmann::json::array(), last;
  std::string failure;
};

}  // namespace

int bench_seq_tasks(const Config& base_in, const std::vector<std::string>& models, const std::string& out_dir,
                    const SeqBenchOptions& o) {
  Config base = base_in;
  const std::string task = parse_run_spec(base).task.name;
  if (o.n > 0) base.set(task == "wordnet" ? "max_len" : "seq_len", std::to_string(o.n), "--n");
  if (o.seeds < 1) throw ConfigError(fmt::format("--seeds must be >= 1 (got {})", o.seeds));
  fs::create_directories(out_dir);
  const TaskInfo info0 = seq_task_info(parse_run_spec(base).task);
  const double limit = o.mem_limit_gib * 1024.0 * 1024.0 * 1024.0;
  const bool sweep = !o.lrs.empty();
  const std::vector<double> lrs = sweep ? o.lrs : std::vector<double>{parse_run_spec(base).trainer.lr};
  const int64_t first_seed = base.get_int("seed");
  // The validation counterpart of the primary test metric ("test_accuracy" -> "val_accuracy").
  const std::string metric = info0.metric, val_metric = "val_" + info0.metric.substr(5);
  const bool classif = info0.head == HeadKind::SequenceClassification;
  const bool token = info0.head == HeadKind::TokenClassification;
  const std::string second = classif ? "test_macro_f1" : token ? "test_exact_match" : "test_accuracy";
  std::vector<nlohmann::json> rows, runs_of_all;  // one row per (model, lr): means over its seeds; one per run
  int failures = 0;
  // With a sweep, each learning rate trains on the first sweep_seeds seeds and the selected one on the rest too.
  const int64_t sweep_seeds = lrs.size() > 1 && o.sweep_seeds > 0 ? std::min(o.sweep_seeds, o.seeds) : o.seeds;
  // Seeds k0 .. k1-1 of one (model, lr) point, each in its own run directory (model[/lr][/s<seed>]); the point's
  // row is (re)computed over every seed it has run.
  auto run_seeds = [&](const std::string& m, size_t i, bool fitted, double lr, PointRuns& p, nlohmann::json& row,
                       int64_t k0, int64_t k1) {
    Config& c = p.config;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t seed = first_seed + k;
      c.set("seed", std::to_string(seed), "--seeds");
      fs::path dir = fs::path(out_dir) / m;
      if (sweep && !fitted) dir /= fmt::format("lr{}", lr);
      if (o.seeds > 1) dir /= fmt::format("s{}", seed);
      nlohmann::json run = {{"model", m}, {"lr", fitted ? nlohmann::json() : nlohmann::json(lr)}, {"seed", seed},
                            {"run_dir", dir.string()}};
      if (!o.quiet)
        std::cerr << fmt::format("== {} ({} of {}){}{}: d_model {}, {} params, estimated memory {:.2f} GiB\n", m,
                                 i + 1, models.size(), sweep && !fitted ? fmt::format(", lr {}", lr) : std::string(),
                                 o.seeds > 1 ? fmt::format(", seed {}", seed) : std::string(),
                                 row["d_model"].is_number() ? row["d_model"].dump() : std::string("-"),
                                 row["params"].get<int64_t>(), row["estimated_bytes"].get<double>() / 1073741824.0);
      try {
        const nlohmann::json s = train_or_reuse(parse_run_spec(c), dir, o);
        const auto& sm = s["metrics"];
        auto put = [&](const std::string& key, const nlohmann::json& v) {
          run[key] = v;
          if (v.is_number()) p.values[key].push_back(v.get<double>());
        };
        run["status"] = "ok";
        put("metric", sm.value(s["primary_metric"].get<std::string>(), nlohmann::json()));
        put("second", sm.contains(second) ? sm[second] : nlohmann::json());
        put("val_metric", sm.contains(val_metric) ? sm[val_metric] : nlohmann::json());
        put("realised_flops_per_token", s["flops"]["realised_per_token"]);
        put("measured_flops_per_token", s["flops"]["measured_forward_per_token"]);
        put("train_seconds", s["time"]["train_seconds_total"]);
        put("tokens_per_second", s["time"]["tokens_per_second"]);
        put("peak_tensor_bytes", s["memory"]["peak_tensor_bytes"]);
        put("peak_rss_bytes", s["memory"]["peak_rss_bytes"]);
        p.seeds.push_back(seed);
        p.last = s;
      } catch (const std::exception& e) {
        run["status"] = "failed";
        run["reason"] = e.what();
        p.failure = e.what();
        ++failures;
        std::cerr << fmt::format("error: model {} (seed {}) failed: {}\n", m, seed, e.what());
      }
      runs_of_all.push_back(run);
    }
    if (p.last.is_null()) {
      row["status"] = "failed";
      row["reason"] = p.failure;
      return;
    }
    row["status"] = p.seeds.size() == static_cast<size_t>(k1) ? "ok" : "partial";
    if (!p.failure.empty()) row["reason"] = p.failure;
    row["params"] = p.last["params"];  // a fitted model's size is known after the fit
    row["threads"] = p.last["threads"];
    row["steps"] = p.last["training"]["steps"];
    row["train_examples"] = p.last["training"]["train_examples"];
    row["metric_name"] = p.last["primary_metric"];
    row["seeds"] = p.seeds;
    for (const auto& [key, v] : p.values) {
      const exp::Stat st = exp::summarize(v);
      row[key] = st.mean;
      row[key + "_std"] = std::isfinite(st.std) ? nlohmann::json(st.std) : nlohmann::json();
    }
    // The mean test metrics, as a run summary holds them (for `cerebra report`).
    row["metrics"] = nlohmann::json::object();
    for (const auto& [name, key] : std::vector<std::pair<std::string, std::string>>{
             {metric, "metric"}, {second, "second"}, {val_metric, "val_metric"}})
      if (row.contains(key)) row["metrics"][name] = row[key];
    row["run_dir"] = (fs::path(out_dir) / m).string();
  };
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string& m = models[i];
    std::vector<nlohmann::json> points;
    std::vector<PointRuns> runs_of_point;  // parallel to points
    ModelSpec named;
    named.name = m;
    const bool fitted = named.is_estimator();  // nb, logreg: their own fit, no learning rate or d_model
    for (double lr : lrs) {
      Config c = base;
      nlohmann::json row = {{"model", m}, {"task", task}, {"n", info0.n}, {"lr", lr}, {"selected", false}};
      try {
        c.set("model", m, "--models");
        if (const auto it = o.model_set.find(m); it != o.model_set.end()) {
          for (const auto& [k, v] : it->second) c.set(k, v, "model_set " + m);
          row["set"] = model_set_text(it->second, "=", " ");
        }
        c.set("lr", fmt::format("{}", lr), sweep ? "--lr-sweep" : "config");
        if (o.budget_params > 0 && !fitted)
          c.set("d_model", std::to_string(match_d_model(c, info0, o.budget_params)), "--budget-params");
        const RunSpec spec = parse_run_spec(c);
        int64_t params = 0;
        {
          torch::NoGradGuard g;
          params = make_model(spec.model, info0)->parameter_count();  // refuses models that cannot run the task
        }
        const int64_t d_model = spec.model.backbone.mixer_options.d_model;
        row["d_model"] = fitted ? nlohmann::json() : nlohmann::json(d_model);
        row["params"] = params;
        row["batch_size"] = spec.trainer.batch_size;
        const double est = estimate_train_bytes(spec, info0, params);
        row["estimated_bytes"] = est;
        if (est > limit) {
          row["status"] = "skipped";
          row["reason"] = fmt::format("estimated training memory {:.1f} GiB exceeds --mem-limit-gib {:.1f}",
                                      est / 1073741824.0, o.mem_limit_gib);
          std::cerr << fmt::format("== {} skipped: {}\n", m, row["reason"].get<std::string>());
          points.push_back(row);
          runs_of_point.emplace_back();
          break;  // the same estimate at every learning rate
        }
      } catch (const ConfigError& e) {
        row["status"] = "skipped";
        row["reason"] = e.what();
        std::cerr << fmt::format("== {} skipped: {}\n", m, e.what());
        points.push_back(row);
        runs_of_point.emplace_back();
        break;  // a config the model cannot run: the same at every learning rate
      }
      runs_of_point.emplace_back().config = c;
      run_seeds(m, i, fitted, lr, runs_of_point.back(), row, 0, fitted ? o.seeds : sweep_seeds);
      if (fitted) row["lr"] = nlohmann::json();
      points.push_back(row);
      if (fitted) break;  // the same fit at every learning rate
    }
    // The model's result: its best point on validation (mean over the seeds of the sweep).
    std::vector<double> val(points.size(), std::nan(""));
    for (size_t r = 0; r < points.size(); ++r)
      if (points[r]["status"] != "failed" && points[r].contains("val_metric") && points[r]["val_metric"].is_number())
        val[r] = points[r]["val_metric"].get<double>();
    const int64_t best = select_best_run(val, info0.higher_is_better);
    if (best >= 0) points[static_cast<size_t>(best)]["selected"] = true;
    if (sweep && best >= 0 && !o.quiet && points[best]["lr"].is_number())
      std::cerr << fmt::format("== {}: lr {} selected ({} {:.4f}{})\n", m, points[best]["lr"].get<double>(), val_metric,
                               val[best], sweep_seeds < o.seeds ? fmt::format(" over {} seeds", sweep_seeds) : "");
    // The selected learning rate's remaining seeds (when the sweep ran on fewer).
    if (best >= 0 && points[best]["lr"].is_number() && sweep_seeds < o.seeds)
      run_seeds(m, i, false, points[best]["lr"].get<double>(), runs_of_point[best], points[best], sweep_seeds, o.seeds);
    rows.insert(rows.end(), points.begin(), points.end());
  }

  std::string budget;  // tokens seen: the rows' steps x batch (the same for every model)
  for (const auto& r : rows)
    if (r.contains("steps") && r["steps"].is_number() && r.contains("batch_size")) {
      budget = fmt::format(", {} steps x {} examples", r["steps"].dump(), r["batch_size"].dump());
      break;
    }
  std::string table = fmt::format("\nTask {} (n = {}, {}), {}{}{}{}\n", task, info0.n, head_kind_name(info0.head),
                                  o.budget_params > 0 ? fmt::format("parameter budget {}", o.budget_params)
                                                      : std::string("d_model from the config"),
                                  rows.empty() || !rows[0].contains("threads") ? std::string()
                                      : fmt::format(", threads={}", rows[0]["threads"].dump()),
                                  budget,
                                  o.seeds > 1 ? fmt::format(", mean ± std over {} seeds from {}{}", o.seeds, first_seed,
                                                            sweep_seeds < o.seeds
                                                                ? fmt::format(" (learning rates compared on the first {})",
                                                                              sweep_seeds)
                                                                : "")
                                              : fmt::format(", seed {}", first_seed));
  const int w = o.seeds > 1 ? 17 : 10;
  table += fmt::format("{:<12} {:>8} {:>1} {:>7} {:>9} {:>{}} {:>{}} {:>{}} {:>12} {:>7} {:>9} {:>10} {:>10}  {}\n",
                       "model", "lr", "", "d_model", "params", metric.substr(5), w, second.substr(5), w, val_metric, w,
                       "FLOPs/token", "steps", "train s", "tensor MiB", "RSS MiB", "status");
  std::ofstream csv(fs::path(out_dir) / "results.csv");
  csv << "task,n,model,lr,selected,status,d_model,params," << metric << "," << metric << "_std," << second << ","
      << second << "_std," << val_metric << "," << val_metric << "_std,seeds,"
      << "steps,batch_size,train_examples,realised_flops_per_token,measured_flops_per_token,train_seconds,"
         "tokens_per_second,peak_tensor_bytes,peak_rss_bytes,estimated_bytes,set,reason\n";
  const nlohmann::json none;
  auto get = [&](const nlohmann::json& j, const std::string& k) { return j.is_object() && j.contains(k) ? j[k] : none; };
  auto mib = [&](const nlohmann::json& v) { return v.is_number() ? nlohmann::json(v.get<double>() / 1048576.0) : none; };
  auto clean = [](std::string s) {
    for (auto& ch : s)
      if (ch == ',' || ch == '\n' || ch == '"') ch = ' ';
    return s;
  };
  for (const auto& r : rows) {
    const std::string status = r["status"].get<std::string>();
    const bool selected = r.value("selected", false);
    const std::string reason = get(r, "reason").is_string() ? get(r, "reason").get<std::string>() : "";
    table += fmt::format(
        "{:<12} {:>8} {:>1} {:>7} {:>9} {:>{}} {:>{}} {:>{}} {:>12} {:>7} {:>9} {:>10} {:>10}  {}\n",
        r["model"].get<std::string>(), num(get(r, "lr"), "{:.3g}"), selected ? "*" : "",
        num(get(r, "d_model"), "{:.0f}"), num(get(r, "params"), "{:.0f}"),
        stat_text(get(r, "metric"), get(r, "metric_std"), "{:.4f}"), w,
        stat_text(get(r, "second"), get(r, "second_std"), "{:.4f}"), w,
        stat_text(get(r, "val_metric"), get(r, "val_metric_std"), "{:.4f}"), w,
        num(get(r, "realised_flops_per_token"), "{:.4g}"), num(get(r, "steps"), "{:.0f}"),
        num(get(r, "train_seconds"), "{:.1f}"), num(mib(get(r, "peak_tensor_bytes")), "{:.1f}"),
        num(mib(get(r, "peak_rss_bytes")), "{:.1f}"), status == "ok" || reason.empty() ? status : status + ": " + reason);
    csv << task << "," << info0.n << "," << r["model"].get<std::string>() << "," << csv_num(get(r, "lr")) << ","
        << (selected ? "true" : "false") << "," << status << "," << csv_num(get(r, "d_model")) << ","
        << csv_num(get(r, "params")) << "," << csv_num(get(r, "metric")) << "," << csv_num(get(r, "metric_std")) << ","
        << csv_num(get(r, "second")) << "," << csv_num(get(r, "second_std")) << "," << csv_num(get(r, "val_metric"))
        << "," << csv_num(get(r, "val_metric_std")) << "," << (r.contains("seeds") ? r["seeds"].size() : 0) << ","
        << csv_num(get(r, "steps")) << "," << csv_num(get(r, "batch_size")) << "," << csv_num(get(r, "train_examples"))
        << "," << csv_num(get(r, "realised_flops_per_token")) << "," << csv_num(get(r, "measured_flops_per_token"))
        << "," << csv_num(get(r, "train_seconds")) << "," << csv_num(get(r, "tokens_per_second")) << ","
        << csv_num(get(r, "peak_tensor_bytes")) << "," << csv_num(get(r, "peak_rss_bytes")) << ","
        << csv_num(get(r, "estimated_bytes")) << "," << clean(get(r, "set").is_string() ? get(r, "set").get<std::string>() : "")
        << "," << clean(reason) << "\n";
  }
  std::ofstream runs_csv(fs::path(out_dir) / "runs.csv");
  runs_csv << "model,lr,seed,status," << metric << "," << second << "," << val_metric
           << ",realised_flops_per_token,train_seconds,peak_tensor_bytes,peak_rss_bytes,run_dir,reason\n";
  for (const auto& r : runs_of_all)
    runs_csv << r["model"].get<std::string>() << "," << csv_num(get(r, "lr")) << "," << r["seed"].dump() << ","
             << r["status"].get<std::string>() << "," << csv_num(get(r, "metric")) << "," << csv_num(get(r, "second"))
             << "," << csv_num(get(r, "val_metric")) << "," << csv_num(get(r, "realised_flops_per_token")) << ","
             << csv_num(get(r, "train_seconds")) << "," << csv_num(get(r, "peak_tensor_bytes")) << ","
             << csv_num(get(r, "peak_rss_bytes")) << "," << r["run_dir"].get<std::string>() << ","
             << clean(get(r, "reason").is_string() ? get(r, "reason").get<std::string>() : "") << "\n";
  for (const auto& [m, kv] : o.model_set) {
    if (std::find(models.begin(), models.end(), m) == models.end()) continue;
    table += fmt::format("{} trains with {} (its own setting, not the shared config's).\n", m,
                         model_set_text(kv, " ", ", "));
  }
  table += fmt::format("{} on the test split ({}); * = the model's learning rate selected by {} (best of the learning "
                       "rates{});\nFLOPs/token = realised forward FLOPs per example / n (2 per multiply-add of "
                       "matmul-class ops);\nbudget = steps x batch_size examples; peak memory per run (RSS is the "
                       "process high-water mark){}.\n",
                       metric.substr(5), info0.higher_is_better ? "higher is better" : "lower is better", val_metric,
                       o.seeds > 1 ? ", mean over seeds" : "",
                       o.seeds > 1 ? "; time and memory are means over seeds; runs.csv lists every run" : "");
  std::cout << table;
  std::ofstream(fs::path(out_dir) / "results.json") << nlohmann::json(rows).dump(2) << "\n";
  std::ofstream(fs::path(out_dir) / "results.txt") << table;
  std::vector<nlohmann::json> chosen;  // one point per model: its selected learning rate
  for (const auto& r : rows)
    if (r.value("selected", false)) chosen.push_back(r);
  write_plot(out_dir, task, metric, info0.n, chosen);
  std::cerr << fmt::format("wrote {}/results.{{csv,json,txt,png,svg}}, runs.csv and one run directory per model{}{}\n",
                           out_dir, sweep ? " and learning rate" : "", o.seeds > 1 ? " and seed" : "");
  return failures > 0 ? 1 : 0;
}

}  // namespace cerebra
