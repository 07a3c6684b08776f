// Experiments: Pareto frontier against brute force, aggregation over seeds, resumable sweeps, Table 1 rows,
// reports and plots.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "cerebra/train/spec.h"
#include "cerebra/exp/experiments.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace cerebra;
using namespace cerebra::exp;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() /
                     ("cerebra_exp_" + name + "_" + std::to_string(::getpid()) + "_" +
                      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << s;
}

std::vector<size_t> brute_front(const std::vector<CostPoint>& pts, bool higher) {
  std::vector<size_t> out;
  for (size_t i = 0; i < pts.size(); ++i) {
    if (!std::isfinite(pts[i].cost) || !std::isfinite(pts[i].value)) continue;
    bool dominated = false;
    for (size_t j = 0; j < pts.size() && !dominated; ++j)
      if (j != i && std::isfinite(pts[j].cost) && std::isfinite(pts[j].value) && dominates(pts[j], pts[i], higher))
        dominated = true;
    if (!dominated) out.push_back(i);
  }
  return out;
}

// A minimal XML well-formedness check: balanced elements, and the root element's name.
std::string xml_root(const std::string& s) {
  std::vector<std::string> stack;
  std::string root;
  size_t i = 0;
  while ((i = s.find('<', i)) != std::string::npos) {
    if (s.compare(i, 4, "<!--") == 0) {
      i = s.find("-->", i);
      if (i == std::string::npos) return "";
      continue;
    }
    if (s.compare(i, 9, "<![CDATA[") == 0) {
      i = s.find("]]>", i);
      if (i == std::string::npos) return "";
      continue;
    }
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return "";
    const std::string tag = s.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty() || tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1, tag.find_first_of(" \t\n") - 1);
      if (stack.empty() || stack.back() != name) return "";
      stack.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    if (stack.empty()) {
      if (!root.empty()) return "";  // two roots
      root = name;
    }
    if (tag.back() != '/') stack.push_back(name);
  }
  return stack.empty() ? root : "";
}

json fake_summary(double rmse, double flops, double dense, double epoch_s, double tensor_bytes) {
  return {{"model", "fake"},
          {"params", 100},
          {"metrics", {{"test_rmse", rmse}}},
          {"target", {{"column", "wage"}, {"transform", "log"}}},
          {"flops", {{"realised_per_example", flops}, {"dense_transformer_per_example", dense}}},
          {"time", {{"epoch_seconds_median", epoch_s}, {"train_seconds_total", 3 * epoch_s}}},
          {"memory", {{"peak_tensor_bytes", tensor_bytes}, {"peak_rss_bytes", 2 * tensor_bytes}}},
          {"threads", 1},
          {"machine", "test machine"},
          {"blas", "libopenblas"},
          {"torch_version", "1.13"}};
}

}  // namespace

// ---- metrics and statistics ------------------------------------------------------------------------------------

TEST(ExperimentsMetric, DirectionFollowsTheName) {
  EXPECT_FALSE(metric_higher_is_better("test_rmse"));
  EXPECT_FALSE(metric_higher_is_better("test_mae_raw"));
  EXPECT_FALSE(metric_higher_is_better("test_bpc"));
  EXPECT_FALSE(metric_higher_is_better("val_loss"));
  EXPECT_TRUE(metric_higher_is_better("test_accuracy"));
  EXPECT_TRUE(metric_higher_is_better("test_macro_f1"));
  EXPECT_TRUE(metric_higher_is_better("test_r2"));
  EXPECT_TRUE(metric_higher_is_better("test_acc"));
  EXPECT_FALSE(metric_higher_is_better("test_rmse_r2x"));  // whole words only
  EXPECT_TRUE(parse_metric("test_bpc:max").higher_is_better);
  EXPECT_FALSE(parse_metric("test_accuracy:min").higher_is_better);
  EXPECT_EQ(parse_metric("test_accuracy:min").name, "test_accuracy");
  EXPECT_THROW(parse_metric("test_rmse:up"), std::invalid_argument);
  EXPECT_EQ(default_metric(json{{"metrics", {{"val_rmse", 1.0}, {"test_rmse", 2.0}}}}), "test_rmse");
  EXPECT_EQ(default_metric(json{{"metrics", {{"val_accuracy", 1.0}, {"test_accuracy", 0.5}}}}), "test_accuracy");
  EXPECT_EQ(default_metric(json{{"metrics", {{"test_exact", 0.5}}}}), "test_exact");
  // The task's primary metric first (a language model also reports accuracy, but is judged on bits per character).
  EXPECT_EQ(default_metric(json{{"primary_metric", "test_bits_per_char"},
                                {"metrics", {{"test_accuracy", 0.5}, {"test_bits_per_char", 2.3}}}}),
            "test_bits_per_char");
  const json s = fake_summary(0.5, 1000, 2000, 1.5, 4096);
  EXPECT_DOUBLE_EQ(summary_value(s, "test_rmse"), 0.5);
  EXPECT_DOUBLE_EQ(summary_value(s, "flops.realised_per_example"), 1000);
  EXPECT_TRUE(std::isnan(summary_value(s, "flops.nothing")));
  EXPECT_TRUE(std::isnan(summary_value(s, "test_accuracy")));
}

TEST(ExperimentsStats, MeanAndSampleStdOnKnownNumbers) {
  const double nan = std::nan("");
  Stat s = summarize({1, 2, 3, 4});
  EXPECT_EQ(s.n, 4);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_NEAR(s.std, std::sqrt(5.0 / 3.0), 1e-12);  // sum of squares 5, n - 1 = 3
  Stat with_missing = summarize({1, nan, 2, 3, 4, INFINITY});
  EXPECT_EQ(with_missing.n, 4);
  EXPECT_DOUBLE_EQ(with_missing.mean, 2.5);
  EXPECT_NEAR(with_missing.std, s.std, 1e-12);
  Stat one = summarize({nan, 7});
  EXPECT_EQ(one.n, 1);
  EXPECT_DOUBLE_EQ(one.mean, 7);
  EXPECT_TRUE(std::isnan(one.std));
  Stat none = summarize({nan});
  EXPECT_EQ(none.n, 0);
  EXPECT_TRUE(std::isnan(none.mean));
  EXPECT_EQ(format_stat(s, 2), "2.50 ± 1.29");
  EXPECT_EQ(format_stat(one, 1), "7.0");
  EXPECT_EQ(format_stat(none), "-");
}

TEST(ExperimentsStats, LogLogSlope) {
  std::vector<double> n{256, 1024, 4096}, quad, lin;
  for (double x : n) {
    quad.push_back(3e-6 * x * x);
    lin.push_back(0.5 * x);
  }
  EXPECT_NEAR(loglog_slope(n, quad), 2.0, 1e-9);
  EXPECT_NEAR(loglog_slope(n, lin), 1.0, 1e-9);
  EXPECT_TRUE(std::isnan(loglog_slope({256}, {1.0})));
  EXPECT_NEAR(loglog_slope({256, 512, 1024}, {1.0, 0.0, 4.0}), 1.0, 1e-9);  // the zero is skipped
  const json doc = {{"threads", 1},
                    {"results",
                     {{{"impl", "a"}, {"n", 256}, {"status", "ok"}, {"ms", 1.0}, {"peak_mib", 2.0}},
                      {{"impl", "a"}, {"n", 1024}, {"status", "ok"}, {"ms", 16.0}, {"peak_mib", 8.0}},
                      {{"impl", "a"}, {"n", 4096}, {"status", "skipped"}},
                      {{"impl", "b"}, {"n", 256}, {"status", "ok"}, {"ms", 1.0}, {"peak_mib", 1.0}}}}};
  auto fits = scaling_fits(doc);
  ASSERT_EQ(fits.size(), 2u);
  EXPECT_NEAR(fits[0].time_slope, 2.0, 1e-9);
  EXPECT_NEAR(fits[0].memory_slope, 1.0, 1e-9);
  EXPECT_TRUE(std::isnan(fits[1].time_slope));
}

// ---- Pareto frontier -------------------------------------------------------------------------------------------

TEST(ExperimentsPareto, HandExample) {
  const std::vector<CostPoint> p{{1, 5}, {2, 3}, {2, 3}, {3, 4}, {4, 1}, {2, 6}, {NAN, 0}};
  EXPECT_EQ(pareto_front(p, false), (std::vector<size_t>{0, 1, 2, 4}));  // lower is better; duplicates both kept
  EXPECT_EQ(pareto_front(p, true), (std::vector<size_t>{0, 5}));         // higher is better
  EXPECT_TRUE(pareto_front({}, false).empty());
}

TEST(ExperimentsPareto, EqualsBruteForceOnRandomPointsWithTies) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 40);
    const int range = 2 + static_cast<int>(rng() % 8);  // small ranges: many ties and exact duplicates
    std::vector<CostPoint> pts;
    for (int i = 0; i < n; ++i) {
      CostPoint c{static_cast<double>(rng() % range), static_cast<double>(rng() % range) * 0.25};
      if (rng() % 20 == 0) c.value = NAN;
      pts.push_back(c);
      if (rng() % 5 == 0) pts.push_back(c);  // duplicate
    }
    for (bool higher : {false, true}) {
      auto fast = pareto_front(pts, higher);
      for (size_t k = 1; k < fast.size(); ++k) EXPECT_LE(pts[fast[k - 1]].cost, pts[fast[k]].cost);
      std::set<size_t> a(fast.begin(), fast.end());
      auto brute = brute_front(pts, higher);
      std::set<size_t> b(brute.begin(), brute.end());
      ASSERT_EQ(a, b) << "trial " << trial << " higher_is_better=" << higher;
      EXPECT_EQ(a.size(), fast.size());  // no index twice
    }
  }
}

// ---- grid ------------------------------------------------------------------------------------------------------

TEST(ExperimentsSweep, GridParsingAndPoints) {
  auto a = parse_grid("lambda=0, 1e-4,1e-3");
  EXPECT_EQ(a.key, "lambda");
  EXPECT_EQ(a.values, (std::vector<std::string>{"0", "1e-4", "1e-3"}));
  EXPECT_THROW(parse_grid("lambdaa=0,1"), ConfigError);
  EXPECT_THROW(parse_grid("lambda=abc"), ConfigError);
  EXPECT_THROW(parse_grid("lambda"), ConfigError);
  EXPECT_THROW(parse_grid("seed=1,2"), ConfigError);
  EXPECT_THROW(parse_grid("lambda=1,1"), ConfigError);
  try {
    parse_grid("lamda=0");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("lambda"), std::string::npos) << e.what();  // did-you-mean
  }
  Config base = test::fixture_config("mlp");
  auto pts = grid_points(base, {parse_grid("lambda=0,1e-3"), parse_grid("compression_ratio=0.25,0.5,0.75")});
  ASSERT_EQ(pts.size(), 6u);
  EXPECT_EQ(pts[0].name, "lambda=0__compression_ratio=0.25");
  EXPECT_EQ(pts[1].name, "lambda=0__compression_ratio=0.5");
  EXPECT_EQ(pts[3].name, "lambda=1e-3__compression_ratio=0.25");
  EXPECT_EQ(pts[3].series, "compression_ratio=0.25");
  EXPECT_DOUBLE_EQ(pts[5].config.get_float("lambda"), 1e-3);
  EXPECT_DOUBLE_EQ(pts[5].config.get_float("compression_ratio"), 0.75);
  auto one = grid_points(base, {parse_grid("lambda=0,1e-3")});
  EXPECT_EQ(one[1].series, "mlp");
  auto models = grid_points(base, {parse_grid("lambda=0,1e-3"), parse_grid("model=mlp,ols")});
  EXPECT_EQ(models[1].series, "model=ols");
}

// ---- aggregation of a sweep directory --------------------------------------------------------------------------

TEST(ExperimentsAggregate, SeedsFailuresAndMissingRuns) {
  const fs::path d = fresh_dir("aggregate");
  json plan = {{"kind", "sweep"},
               {"title", "t"},
               {"metric", ""},
               {"seeds", 3},
               {"points",
                {{{"name", "a"}, {"label", "a"}, {"series", "s1"}, {"params", {{"lambda", "0"}}}},
                 {{"name", "b"}, {"label", "b"}, {"series", "s1"}, {"params", {{"lambda", "1"}}}},
                 {{"name", "c"}, {"label", "c"}, {"series", "s2"}, {"params", {{"lambda", "2"}}}},
                 {{"name", "u"}, {"label", "u"}, {"series", "s2"}, {"unavailable", "no config"}}}},
               {"runs", json::array()}};
  auto add = [&](const std::string& point, int seed) {
    const std::string dir = point + "__seed=" + std::to_string(seed);
    plan["runs"].push_back({{"point", point}, {"seed", seed}, {"dir", dir}});
    return d / dir;
  };
  // a: three seeds, rmse 1, 2, 3 at 100 FLOPs (dense 200), epoch 1, 2, 3 s
  for (int s = 0; s < 3; ++s) {
    write_text(add("a", s) / "summary.json", fake_summary(1 + s, 100, 200, 1 + s, 1048576.0 * (s + 1)).dump());
    write_text(d / ("a__seed=" + std::to_string(s)) / "config.yaml", "seed: " + std::to_string(s) + "\n");
  }
  // b: seed 0 ok (rmse 1.5 at 50 FLOPs), seed 1 failed, seed 2 missing (interrupted: no summary)
  write_text(add("b", 0) / "summary.json", fake_summary(1.5, 50, 200, 10, 1).dump());
  write_text(add("b", 1) / "error.txt", "boom: bad value\nsecond line\n");
  write_text(add("b", 2) / "config.yaml", "x: 1\n");
  // c: two seeds, worse and more expensive: dominated in FLOPs, but fastest
  write_text(add("c", 0) / "summary.json", fake_summary(4, 300, 200, 0.5, 1).dump());
  write_text(add("c", 1) / "summary.json", fake_summary(6, 300, 200, 0.5, 1).dump());
  write_text(d / "sweep.json", plan.dump());

  SweepTable t = load_sweep(d.string());
  EXPECT_EQ(t.metric.name, "test_rmse");
  EXPECT_FALSE(t.metric.higher_is_better);
  ASSERT_EQ(t.points.size(), 4u);
  const auto& a = t.points[0];
  EXPECT_EQ(a.n_ok, 3);
  EXPECT_DOUBLE_EQ(a.metric.mean, 2.0);
  EXPECT_NEAR(a.metric.std, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(a.relative_flops.mean, 0.5);
  EXPECT_DOUBLE_EQ(a.epoch_seconds.mean, 2.0);
  EXPECT_DOUBLE_EQ(a.peak_tensor_bytes.mean, 2.0 * 1048576.0);
  const auto& b = t.points[1];
  EXPECT_EQ(b.n_runs, 3);
  EXPECT_EQ(b.n_ok, 1);
  EXPECT_EQ(b.n_failed, 1);
  EXPECT_EQ(b.n_missing, 1);
  EXPECT_DOUBLE_EQ(b.metric.mean, 1.5);
  EXPECT_TRUE(std::isnan(b.metric.std));
  ASSERT_EQ(b.errors.size(), 1u);
  EXPECT_EQ(b.errors[0], "seed 1: boom: bad value");
  const auto& c = t.points[2];
  EXPECT_DOUBLE_EQ(c.metric.mean, 5.0);
  EXPECT_NEAR(c.metric.std, std::sqrt(2.0), 1e-12);
  EXPECT_EQ(t.points[3].n_runs, 0);
  // frontier: FLOPs: b (50, 1.5) dominates a (100, 2) and c; time: c (0.5 s) and a (2 s, 2.0) and b? b is 10 s, 1.5
  EXPECT_FALSE(a.front_flops);
  EXPECT_TRUE(b.front_flops);
  EXPECT_FALSE(c.front_flops);
  EXPECT_TRUE(c.front_time);
  EXPECT_TRUE(a.front_time);
  EXPECT_TRUE(b.front_time);
  EXPECT_FALSE(t.points[3].front_flops);

  // higher-is-better metric flips the frontier
  SweepTable th = load_sweep(d.string(), "test_rmse:max");
  EXPECT_TRUE(th.points[1].front_flops);  // b: cheapest
  EXPECT_TRUE(th.points[0].front_flops);  // a: better than b, cheaper than c
  EXPECT_TRUE(th.points[2].front_flops);  // c: best value
  SweepTable th_time = load_sweep(d.string(), "test_rmse:max");
  EXPECT_TRUE(th_time.points[2].front_time);   // c: fastest and best
  EXPECT_FALSE(th_time.points[0].front_time);  // a: slower and worse than c
  EXPECT_FALSE(th_time.points[1].front_time);

  EXPECT_EQ(write_sweep_outputs(t, false), "");
  const std::string runs = read_text(d / "runs.csv");
  EXPECT_NE(runs.find("b,1,b__seed=1,failed"), std::string::npos) << runs;
  EXPECT_NE(runs.find("b,2,b__seed=2,missing"), std::string::npos) << runs;
  const json table = json::parse(read_text(d / "table.json"));
  EXPECT_EQ(table["points"][1]["status"], "partial");
  EXPECT_EQ(table["points"][3]["status"], "unavailable: no config");
  EXPECT_DOUBLE_EQ(table["points"][0]["metric"]["mean"].get<double>(), 2.0);
  const json front = json::parse(read_text(d / "frontier.json"));
  ASSERT_EQ(front["flops"].size(), 1u);
  EXPECT_EQ(front["flops"][0]["point"], "b");
  ASSERT_EQ(front["time"].size(), 3u);
  EXPECT_EQ(front["time"][0]["point"], "c");  // ordered by cost

  const std::string md = write_report(d.string(), false);
  EXPECT_NE(md.find("test machine"), std::string::npos);
  EXPECT_NE(md.find(fnv1a64_hex("seed: 0\n")), std::string::npos);  // config hash of a__seed=0
  EXPECT_NE(md.find("boom: bad value"), std::string::npos);
  EXPECT_TRUE(fs::exists(d / "report.md"));
  fs::remove_all(d);
}

// ---- resumable sweeps with real runs ---------------------------------------------------------------------------

TEST(ExperimentsSweep, InterruptedSweepResumesOnlyMissingRuns) {
  const fs::path d = fresh_dir("resume");
  Config base = test::fixture_config("ols");
  base.set("epochs", "1", "test");
  int calls = 0;
  std::vector<std::string> ran_dirs;
  SweepOptions o;
  o.out = d.string();
  o.seeds = 2;
  o.quiet = true;
  o.plots = false;
  o.run = [&](const Config& c, const std::string& dir, const RunOptions& ro) {
    ++calls;
    ran_dirs.push_back(fs::path(dir).filename().string());
    return train_run(parse_run_spec(c), dir, ro);
  };
  const auto points = grid_points(base, {parse_grid("model=ols,mlp")});
  SweepOutcome first = run_sweep(points, o);
  EXPECT_EQ(first.total, 4);
  EXPECT_EQ(first.ran, 4);
  EXPECT_EQ(first.failed, 0);
  EXPECT_EQ(calls, 4);
  const fs::path victim = d / "model=mlp__seed=43";
  ASSERT_TRUE(fs::exists(victim / "summary.json"));
  std::map<std::string, fs::file_time_type> mtimes;
  for (const auto& e : fs::directory_iterator(d))
    if (fs::exists(e.path() / "summary.json")) mtimes[e.path().filename()] = fs::last_write_time(e.path() / "summary.json");
  ASSERT_EQ(mtimes.size(), 4u);

  // nothing to do on a re-run
  SweepOutcome again = run_sweep(points, o);
  EXPECT_EQ(again.ran, 0);
  EXPECT_EQ(again.skipped, 4);
  EXPECT_EQ(calls, 4);

  // interrupted: one run lost its summary.json -> only that run is redone
  fs::remove(victim / "summary.json");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ran_dirs.clear();
  SweepOutcome resumed = run_sweep(points, o);
  EXPECT_EQ(resumed.ran, 1);
  EXPECT_EQ(resumed.skipped, 3);
  EXPECT_EQ(ran_dirs, (std::vector<std::string>{"model=mlp__seed=43"}));
  for (const auto& [name, t] : mtimes)
    if (name != victim.filename().string()) EXPECT_EQ(fs::last_write_time(d / name / "summary.json"), t) << name;
  EXPECT_TRUE(fs::exists(victim / "summary.json"));

  // a changed config (here: epochs) is not silently reused
  Config longer = base;
  longer.set("epochs", "2", "test");
  const auto points2 = grid_points(longer, {parse_grid("model=ols")});
  SweepOutcome changed = run_sweep(points2, o);
  EXPECT_EQ(changed.ran, 2);

  SweepTable t = load_sweep(d.string());
  ASSERT_EQ(t.points.size(), 1u);
  EXPECT_EQ(t.points[0].n_ok, 2);
  EXPECT_GT(t.points[0].metric.mean, 0);
  EXPECT_TRUE(std::isfinite(t.points[0].metric.std));
  fs::remove_all(d);
}

TEST(ExperimentsSweep, FailedPointIsRecordedAndTheRestGoOn) {
  const fs::path d = fresh_dir("failing");
  Config base = test::fixture_config("ols");
  SweepOptions o;
  o.out = d.string();
  o.seeds = 1;
  o.quiet = true;
  o.plots = false;
  const std::string good = test::source_path("data/fixtures/cps1988_small.csv");
  const auto points = grid_points(base, {GridAxis{"data", {"/nonexistent/missing.csv", good}}});
  SweepOutcome r = run_sweep(points, o);
  EXPECT_EQ(r.ran, 2);
  EXPECT_EQ(r.failed, 1);
  SweepTable t = load_sweep(d.string());
  ASSERT_EQ(t.points.size(), 2u);
  EXPECT_EQ(t.points[0].n_failed, 1);
  EXPECT_EQ(t.points[0].n_ok, 0);
  ASSERT_EQ(t.points[0].errors.size(), 1u);
  EXPECT_NE(t.points[0].errors[0].find("missing.csv"), std::string::npos) << t.points[0].errors[0];
  EXPECT_EQ(t.points[1].n_ok, 1);
  EXPECT_NE(read_text(d / "runs.csv").find(",failed,"), std::string::npos);
  // a re-run retries the failed run only
  SweepOutcome again = run_sweep(points, o);
  EXPECT_EQ(again.ran, 1);
  EXPECT_EQ(again.skipped, 1);
  EXPECT_EQ(again.failed, 1);
  fs::remove_all(d);
}

// ---- Table 1 ---------------------------------------------------------------------------------------------------

TEST(ExperimentsTable1, UnavailableRowsAreReportedNotFatal) {
  const fs::path d = fresh_dir("table1");
  const std::string data = test::source_path("data/fixtures/cps1988_small.csv");
  write_text(d / "ols.yaml", "task: cps1988\ndata: " + data + "\nmodel: ols\nthreads: 1\n");
  write_text(d / "bad.yaml", "base: ols.yaml\nsampler_rate: 0.5\n");
  write_text(d / "rows.yaml",
             "seeds: 3\nrows:\n"
             "  - {id: ref, label: OLS reference, config: ols.yaml, reference: true}\n"
             "  - {id: more_val, label: OLS more validation, config: ols.yaml, set: {val_fraction: 0.3}}\n"
             "  - {id: gone, label: Missing, config: does_not_exist.yaml}\n"
             "  - {id: bad, label: Unknown key, config: bad.yaml}\n"
             "quick:\n  seeds: 1\n  set: {max_rows: 400}\n");
  Table1Options o;
  o.rows_file = (d / "rows.yaml").string();
  o.out = (d / "out").string();
  o.quick = true;
  o.plots = false;
  SweepOutcome r = reproduce_table1(o);
  EXPECT_EQ(r.total, 2);  // one seed x two available rows
  EXPECT_EQ(r.unavailable, 2);
  EXPECT_EQ(r.failed, 0);
  const std::string md = read_text(d / "out" / "table1.md");
  EXPECT_NE(md.find("| OLS reference |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 1.00 |"), std::string::npos) << md;  // the reference's relative FLOPs
  EXPECT_NE(md.find("does_not_exist.yaml not found"), std::string::npos) << md;
  EXPECT_NE(md.find("sampler_rate"), std::string::npos) << md;
  const std::string csv = read_text(d / "out" / "table1.csv");
  EXPECT_NE(csv.find("gone,Missing,unavailable"), std::string::npos) << csv;
  SweepTable t = load_sweep((d / "out").string());
  // quick overrides reach every row, and a row's own `set` is applied too
  EXPECT_EQ(t.runs[0].summary["data"]["rows"].get<int64_t>(), 400);
  EXPECT_EQ(t.runs[1].summary["data"]["rows"].get<int64_t>(), 400);
  EXPECT_GT(t.runs[1].summary["data"]["val"].get<int64_t>(), 2 * t.runs[0].summary["data"]["val"].get<int64_t>());
  fs::remove_all(d);
}

// ---- plots -----------------------------------------------------------------------------------------------------

TEST(ExperimentsPlot, PngAndSvgAreValidOrGnuplotIsReportedMissing) {
  const fs::path d = fresh_dir("plot");
  Figure f;
  f.stem = "fig";
  f.title = "it's a test_title";
  f.xlabel = "realised FLOPs per example (FLOPs)";
  f.ylabel = "test_rmse (lower is better)";
  f.series.push_back(Series{"series a", {1, 2, 4}, {3, 2, 1.5}, {0.1, 0.1, 0.2}, {0.05, NAN, 0.1}});
  f.series.push_back(Series{"series b", {1.5, 3}, {2.5, 1.8}, {}, {}});
  f.frontier = Series{"Pareto frontier", {1, 1.5, 2, 4}, {3, 2.5, 2, 1.5}, {}, {}};
  if (gnuplot_binary().empty()) {
    try {
      draw_figure(d.string(), f);
      FAIL() << "expected an error without gnuplot";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("gnuplot-nox"), std::string::npos) << e.what();
    }
  } else {
    auto files = draw_figure(d.string(), f);
    ASSERT_EQ(files.size(), 2u);
    const std::string png = read_text(files[0]);
    ASSERT_GE(png.size(), 8u);
    EXPECT_EQ(static_cast<unsigned char>(png[0]), 0x89);
    EXPECT_EQ(png.substr(1, 3), "PNG");
    EXPECT_EQ(png.substr(4, 4), "\r\n\x1a\n");
    EXPECT_GT(png.size(), 2000u);
    const std::string svg = read_text(files[1]);
    EXPECT_EQ(xml_root(svg), "svg");
    EXPECT_NE(svg.find("series a"), std::string::npos);
    EXPECT_NE(svg.find("test_rmse"), std::string::npos);
  }
  // and with gnuplot pointed at a missing binary, the message says what to install
  ::setenv("CEREBRA_GNUPLOT", "/nonexistent/gnuplot", 1);
  try {
    draw_figure(d.string(), f);
    ADD_FAILURE() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("gnuplot not found"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("apt-get install gnuplot-nox"), std::string::npos) << e.what();
  }
  ::unsetenv("CEREBRA_GNUPLOT");
  fs::remove_all(d);
}

TEST(ExperimentsPlot, BenchLayersScalingReport) {
  const fs::path d = fresh_dir("layers");
  json results = json::array();
  for (double n : {256.0, 1024.0, 4096.0}) {
    results.push_back({{"impl", "attention:naive"}, {"n", n}, {"d", 64}, {"batch", 1}, {"status", "ok"},
                       {"ms", 1e-4 * n * n}, {"peak_mib", 1e-5 * n * n}});
    results.push_back({{"impl", "mamba"}, {"n", n}, {"d", 64}, {"batch", 1}, {"status", "ok"}, {"ms", 0.01 * n},
                       {"peak_mib", 0.001 * n}});
  }
  write_text(d / "results.json",
             json{{"machine", "m"}, {"threads", 2}, {"blas", "b"}, {"torch", "1.13"}, {"gemm_gflops", 50.0},
                  {"results", results}}
                 .dump());
  const bool have_gnuplot = !gnuplot_binary().empty();
  const std::string md = write_report(d.string(), have_gnuplot);
  EXPECT_NE(md.find("| attention:naive | 256, 1024, 4096 | 2.00 | 2.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| mamba | 256, 1024, 4096 | 1.00 | 1.00 |"), std::string::npos) << md;
  EXPECT_TRUE(fs::exists(d / "scaling.csv"));
  if (have_gnuplot) {
    EXPECT_TRUE(fs::exists(d / "plots" / "scaling_time.png"));
    EXPECT_NE(read_text(d / "plots" / "scaling_time.svg").find("attention:naive (slope 2.00)"), std::string::npos);
    EXPECT_NE(md.find("![Step time vs n"), std::string::npos);
  }
  fs::remove_all(d);
}
