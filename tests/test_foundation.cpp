// Foundation: configuration, split, models, FLOP accounting, checkpoints, runtime facts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <fstream>
#include <thread>

#include <sched.h>
#include <sys/wait.h>

#include "cerebra/train/spec.h"
#include "cerebra/core/config.h"
#include "cerebra/models/baselines.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/core/op_profiler.h"
#include "cerebra/models/models.h"
#include "cerebra/core/io.h"
#include "cerebra/core/runtime.h"
#include "cerebra/data/tabular.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace cerebra;
using test::temp_dir;
using test::error_of;

namespace {

void write_file(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

}  // namespace

// ---- runtime

TEST(Runtime, LibTorchUsesOpenBlas) {
  // The reference BLAS is ten times slower; it must never be picked silently.
  const std::string lib = loaded_blas_library();
  std::cout << "BLAS: " << lib << "\n";
  EXPECT_NE(lib.find("openblas"), std::string::npos) << "LibTorch's BLAS is " << lib;
  EXPECT_NO_THROW(require_openblas());
}

TEST(Runtime, ThreadsAreSetExplicitly) {
  EXPECT_EQ(set_threads(1), 1);
  EXPECT_EQ(set_threads(2), 2);  // a count is used as given, whatever the load
  const int automatic = set_threads(0);
  EXPECT_GE(automatic, 1);
  EXPECT_LE(automatic, available_cores());
  EXPECT_THROW(set_threads(-1), std::invalid_argument);
  set_threads(1);
}

// threads 0 takes the cores other processes leave idle: with a thread of this process spinning on one core, at
// most the others count; a process allowed one CPU (taskset) has one core.
TEST(Runtime, AutomaticThreadsLeaveOutBusyCores) {
  cpu_set_t all;
  ASSERT_EQ(sched_getaffinity(0, sizeof(all), &all), 0);
  const int cores = available_cores();
  EXPECT_EQ(cores, CPU_COUNT(&all));
  if (cores >= 2) {
    std::atomic<bool> stop{false};
    std::thread spin([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const int idle = idle_cores(0.3);
    stop = true;
    spin.join();
    EXPECT_LE(idle, cores - 1);
    EXPECT_GE(idle, 1);
  }
  int first = 0;
  while (!CPU_ISSET(first, &all)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  const int cores_one = available_cores(), idle_one = idle_cores(0.05);
  ASSERT_EQ(sched_setaffinity(0, sizeof(all), &all), 0);
  EXPECT_EQ(cores_one, 1);
  EXPECT_EQ(idle_one, 1);
}

// The command line re-executes itself with passive OpenMP waiting unless the environment chose a policy, and its
// runs record the policy they ran with.
TEST(Runtime, CommandLineWaitsPassivelyUnlessTheEnvironmentChooses) {
  const fs::path dir = temp_dir("omp_wait");
  auto policy_of_run = [&](const char* env) {
    const fs::path out = dir / (env ? env : "unset"), log = dir / "log.txt";
    const char* saved = std::getenv("OMP_WAIT_POLICY");
    const std::string saved_value = saved ? saved : "";
    if (env) ::setenv("OMP_WAIT_POLICY", env, 1); else ::unsetenv("OMP_WAIT_POLICY");
    std::vector<std::string> args = {"train", "--out", out.string(), "-q"};
    for (auto& a : test::config_args(test::fixture_config("ols"))) args.push_back(a);
    const pid_t pid = test::spawn_cerebra(args, log);
    if (saved) ::setenv("OMP_WAIT_POLICY", saved_value.c_str(), 1); else ::unsetenv("OMP_WAIT_POLICY");
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << test::read_log(log);
    return read_json_file(out / "summary.json").value("openmp_wait_policy", std::string("missing"));
  };
  if (!std::getenv("GOMP_SPINCOUNT")) EXPECT_EQ(policy_of_run(nullptr), "PASSIVE");
  EXPECT_EQ(policy_of_run("ACTIVE"), "ACTIVE");
  fs::remove_all(dir);
}

TEST(Runtime, CountingAllocatorSeesTensors) {
  install_counting_allocator();
  ASSERT_TRUE(counting_allocator_installed());
  const int64_t before = current_tensor_bytes();
  reset_peak_tensor_bytes();
  {
    auto t = torch::empty({1000, 1000});  // 4,000,000 bytes
    EXPECT_GE(current_tensor_bytes() - before, 4000000);
  }
  EXPECT_EQ(current_tensor_bytes(), before);
  EXPECT_GE(peak_tensor_bytes() - before, 4000000);
  EXPECT_GT(peak_rss_bytes(), 0);
}

TEST(Runtime, LargeFreedBlocksAreReusedAndCountedOnce) {
  install_counting_allocator();
  release_cached_blocks();
  const int64_t before = current_tensor_bytes();
  reset_peak_tensor_bytes();
  void* first = nullptr;
  {
    auto a = torch::empty({1024, 1024});  // 4 MiB: cached when freed
    first = a.data_ptr();
  }
  EXPECT_EQ(current_tensor_bytes(), before);  // a cached block is not live
  {
    auto b = torch::empty({1024, 1024});    // same size: the cached block comes back
    EXPECT_EQ(b.data_ptr(), first);
    EXPECT_EQ(current_tensor_bytes() - before, 4 * 1024 * 1024);
    auto c = torch::empty({1024, 1024});    // none left of that size: a new block
    EXPECT_NE(c.data_ptr(), first);
  }
  EXPECT_EQ(current_tensor_bytes(), before);
  EXPECT_EQ(peak_tensor_bytes() - before, 8 * 1024 * 1024);
  release_cached_blocks();
  {
    auto d = torch::empty({1024, 1024}).fill_(1.0f);  // still a valid, writable block after the release
    EXPECT_EQ(d.sum().item<float>(), 1024.0f * 1024.0f);
  }
}

// ---- configuration

TEST(Config, DefaultsAndTypedOverrides) {
  Config c;
  EXPECT_EQ(c.get_int("epochs"), 30);
  c.set("lr", "3e-4", "test");
  EXPECT_DOUBLE_EQ(c.get_float("lr"), 3e-4);
  c.set("allow_slow_blas", "yes", "test");
  EXPECT_TRUE(c.get_bool("allow_slow_blas"));
  EXPECT_EQ(c.changed().size(), 2u);
}

TEST(Config, RejectsUnknownKeyListingValidOnes) {
  Config c;
  std::string e = error_of([&] { c.set("epoch", "3", "cli"); });
  EXPECT_NE(e.find("unknown key 'epoch'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'epochs'"), std::string::npos) << e;
  EXPECT_NE(e.find("batch_size"), std::string::npos) << "the message lists the valid keys: " << e;
}

TEST(Config, RejectsWrongTypesAndChoices) {
  Config c;
  EXPECT_NE(error_of([&] { c.set("epochs", "3.5", "cli"); }).find("expects an integer, got '3.5'"), std::string::npos);
  EXPECT_NE(error_of([&] { c.set("lr", "fast", "cli"); }).find("expects a number"), std::string::npos);
  EXPECT_NE(error_of([&] { c.set("lr_schedule", "step", "cli"); }).find("must be one of cosine, linear, constant"),
            std::string::npos);
  EXPECT_NE(error_of([&] { c.set("allow_slow_blas", "maybe", "cli"); }).find("true or false"), std::string::npos);
  EXPECT_EQ(c.get_int("epochs"), 30) << "a rejected value must not change the config";
}

TEST(Config, YamlFilesInheritAndNameTheLine) {
  auto dir = temp_dir("config");
  write_file(dir / "base.yaml", "epochs: 7\nlr: 0.01\n");
  write_file(dir / "exp.yaml", "base: base.yaml\nlr: 0.002\nmodel: lstm\n");
  Config c;
  c.load_yaml_file((dir / "exp.yaml").string());
  EXPECT_EQ(c.get_int("epochs"), 7);
  EXPECT_DOUBLE_EQ(c.get_float("lr"), 0.002);
  EXPECT_EQ(c.get_string("model"), "lstm");

  write_file(dir / "bad.yaml", "epochs: 7\n\nbatchsize: 32\n");
  std::string e = error_of([&] { Config().load_yaml_file((dir / "bad.yaml").string()); });
  EXPECT_NE(e.find("bad.yaml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'batch_size'"), std::string::npos) << e;

  write_file(dir / "type.yaml", "epochs: many\n");
  e = error_of([&] { Config().load_yaml_file((dir / "type.yaml").string()); });
  EXPECT_NE(e.find("type.yaml:1: key 'epochs' expects an integer, got 'many'"), std::string::npos) << e;

  write_file(dir / "syntax.yaml", "epochs: [1,\n");
  EXPECT_NE(error_of([&] { Config().load_yaml_file((dir / "syntax.yaml").string()); }).find("YAML syntax error"),
            std::string::npos);
  write_file(dir / "cycle.yaml", "base: cycle.yaml\n");
  EXPECT_NE(error_of([&] { Config().load_yaml_file((dir / "cycle.yaml").string()); }).find("cycle"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Config().load_yaml_file((dir / "none.yaml").string()); }).find("not found"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(Config, ShippedConfigsLoad) {
  for (const auto& entry : fs::directory_iterator(test::source_path("configs"))) {
    if (entry.path().extension() != ".yaml") continue;
    Config c;
    EXPECT_NO_THROW(c.load_yaml_file(entry.path().string())) << entry.path();
  }
}

TEST(Config, YamlRoundTrip) {
  Config c;
  c.set("model", "mlp", "t");
  c.set("lr", "0.005", "t");
  c.set("categorical", "a,b", "t");
  auto dir = temp_dir("roundtrip");
  write_file(dir / "c.yaml", c.to_yaml());
  Config d;
  d.load_yaml_file((dir / "c.yaml").string());
  EXPECT_EQ(c.to_json(), d.to_json());
  fs::remove_all(dir);
}

// ---- data and split

TEST(Split, DeterministicDisjointAndComplete) {
  Split a = make_split(1000, 0.1, 0.2, 7), b = make_split(1000, 0.1, 0.2, 7), c = make_split(1000, 0.1, 0.2, 8);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.test, b.test);
  EXPECT_NE(a.test, c.test) << "another seed gives another split";
  EXPECT_EQ(a.test.size(), 200u);
  EXPECT_EQ(a.val.size(), 100u);
  std::vector<int> seen(1000, 0);
  for (const auto* part : {&a.train, &a.val, &a.test})
    for (auto i : *part) ++seen[i];
  for (int s : seen) ASSERT_EQ(s, 1);
  EXPECT_THROW(make_split(10, 0.5, 0.5, 1), ConfigError);
}

TEST(Tabular, EncodesWithTrainingStatisticsOnly) {
  Config c = test::fixture_config("mlp");
  TabularSource src = open_tabular(resolve_table(parse_run_spec(c).task));
  ASSERT_EQ(src.rows.size(), 600u);
  EXPECT_EQ(src.num_cols.size(), 2u);  // education, experience
  EXPECT_EQ(src.cat_cols.size(), 4u);  // ethnicity, smsa, region, parttime
  Split s = make_split(600, 0.1, 0.2, 1);
  TabularData d = encode_tabular(src, s.train);
  auto tr = torch::tensor(s.train);
  // Standardised on the training rows: mean 0, sd 1 there (and generally not on the test rows).
  auto num_tr = d.num.index_select(0, tr);
  EXPECT_NEAR(num_tr.mean(0).abs().max().item<double>(), 0.0, 1e-5);
  EXPECT_NEAR(num_tr.std(0).sub(1).abs().max().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(d.y.index_select(0, tr).mean().item<double>(), 0.0, 1e-5);
  // The inverse transform gives back the file's wages.
  EXPECT_LT((d.to_raw(d.y) - d.y_raw).abs().max().item<double>() / d.y_raw.max().item<double>(), 1e-5);
  // Region has 4 values + the unknown bucket.
  EXPECT_EQ(d.cardinalities[2], 5);
  EXPECT_GE(d.cat.min().item<int64_t>(), 0);
}

TEST(Tabular, UnseenCategoryGoesToUnknownBucket) {
  auto dir = temp_dir("unseen");
  std::string csv = "y,color,x\n";
  for (int i = 0; i < 40; ++i) csv += std::to_string(1 + i) + "," + (i % 2 ? "red" : "blue") + "," + std::to_string(i) + "\n";
  csv += "5,green,3\n";  // row 40: a category only this row has
  write_file(dir / "t.csv", csv);
  TableSpec spec{"csv", (dir / "t.csv").string(), "y", "none", {}, {}, {}};
  TabularSource src = open_tabular(spec);
  std::vector<int64_t> train;
  for (int64_t i = 0; i < 40; ++i) train.push_back(i);
  TabularData d = encode_tabular(src, train);
  EXPECT_EQ(d.cardinalities[0], 3);  // blue, red + unknown
  EXPECT_EQ(d.cat[40][0].item<int64_t>(), 0);
  EXPECT_GT(d.cat[0][0].item<int64_t>(), 0);
  fs::remove_all(dir);
}

TEST(Tabular, BadTargetNamesFileAndLine) {
  auto dir = temp_dir("badtarget");
  write_file(dir / "t.csv", "y,x\n1,2\n-3,4\n");
  TableSpec spec{"csv", (dir / "t.csv").string(), "y", "log", {}, {}, {}};
  std::string e = error_of([&] { open_tabular(spec); });
  EXPECT_NE(e.find("t.csv:3"), std::string::npos) << e;
  EXPECT_NE(e.find("log transform needs values > 0"), std::string::npos) << e;
  spec.target = "salary";
  e = error_of([&] { open_tabular(spec); });
  EXPECT_NE(e.find("salary"), std::string::npos) << e;
  fs::remove_all(dir);
}

// ---- models

class EveryModel : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryModel, OutputShapeAndTrainingReducesLoss) {
  if (GetParam() == "s4d")  // an open bug: see S4dMixer.DISABLED_GradientsFiniteForEveryInitialisation
    GTEST_SKIP() << "s4d: a rare non-finite backward (about 1 in 4,000 passes) makes this many-step loop flaky";
  set_threads(1);
  torch::manual_seed(0);
  Config c = test::fixture_config(GetParam());
  TabularSource src = open_tabular(resolve_table(parse_run_spec(c).task));
  Split s = make_split(static_cast<int64_t>(src.rows.size()), 0.1, 0.2, 1);
  TabularData d = encode_tabular(src, s.train);
  InputSchema schema{static_cast<int64_t>(d.numeric_names.size()), d.cardinalities, 1};
  auto model = make_tabular_model(parse_run_spec(c).model, schema);
  auto batch_of = [&](const std::vector<int64_t>& rows) {
    auto idx = torch::tensor(rows);
    Batch b;
    b.num = d.num.index_select(0, idx);
    b.cat = d.cat.index_select(0, idx);
    b.y = d.y.index_select(0, idx);
    return b;
  };
  Batch b = batch_of(s.train);
  model->eval();
  auto out = model->forward(b);
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({static_cast<int64_t>(s.train.size()), 1}));
  const double before = torch::mse_loss(out.reshape(-1), b.y).item<double>();

  model->train();
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3));
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    auto loss = torch::mse_loss(model->forward(b).reshape(-1), b.y);
    loss.backward();
    opt.step();
  }
  model->eval();
  const double after = torch::mse_loss(model->forward(b).reshape(-1), b.y).item<double>();
  std::cout << GetParam() << ": training loss " << before << " -> " << after << "\n";
  EXPECT_LT(after, 0.8 * before);
}

TEST_P(EveryModel, AnalyticFlopsMatchMeasured) {
  set_threads(1);
  Config c = test::fixture_config(GetParam());
  InputSchema schema{2, {3, 4, 5, 3}, 1};
  auto model = make_tabular_model(parse_run_spec(c).model, schema);
  model->eval();
  const int64_t B = 8;
  Batch b;
  b.num = torch::randn({B, 2});
  b.cat = torch::zeros({B, 4}, torch::kInt64);
  double measured;
  {
    torch::NoGradGuard g;
    FlopCounter counter;
    model->forward(b);
    measured = counter.total() / B;
  }
  const double analytic = model->flops_per_example();
  std::cout << GetParam() << ": analytic " << analytic << ", measured " << measured << " FLOPs/example\n";
  ASSERT_GT(analytic, 0);
  EXPECT_NEAR(measured / analytic, 1.0, 0.05);
}

// Every model a tabular task can build, including each registered sequence mixer.
INSTANTIATE_TEST_SUITE_P(Tabular, EveryModel, ::testing::ValuesIn(tabular_model_names()));

// The profiler times outermost records only: a matmul's forward and its backward node appear once per call, the
// ops nested in them (the backward's own mm calls) are not counted again, and the total fits inside the wall time.
TEST(OpProfiler, TimesOutermostOpsOncePerCall) {
  auto a = torch::randn({64, 64}, torch::requires_grad()), b = torch::randn({64, 64});
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<OpProfiler::Entry> entries;
  double total = 0;
  {
    OpProfiler profiler;
    for (int i = 0; i < 3; ++i) torch::mm(a, b).sum().backward();
    entries = profiler.entries();
    total = profiler.total_seconds();
    EXPECT_THROW(OpProfiler(), std::logic_error);
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::map<std::string, int64_t> calls;
  for (const auto& e : entries) {
    calls[e.op] = e.calls;
    EXPECT_GE(e.seconds, 0.0) << e.op;
  }
  EXPECT_EQ(calls["aten::mm"], 3);  // the forward's; the backward's mm runs inside MmBackward0
  int64_t mm_backward = 0;
  for (const auto& [op, n] : calls)
    if (op.find("MmBackward0") != std::string::npos) mm_backward += n;
  EXPECT_EQ(mm_backward, 3);
  EXPECT_GT(total, 0.0);
  EXPECT_LE(total, wall);
  for (size_t i = 1; i < entries.size(); ++i) EXPECT_GE(entries[i - 1].seconds, entries[i].seconds);
  OpProfiler again;  // the first one stopped: a new one may start, with nothing recorded
  EXPECT_TRUE(again.entries().empty());
}

// profile_ops reports per repetition; the table and the JSON carry the same figures.
TEST(OpProfiler, BreakdownIsPerRepetitionAndRoundTrips) {
  auto a = torch::randn({32, 32}), b = torch::randn({32, 32});
  const OpBreakdown br = profile_ops([&] { (void)torch::mm(a, b).relu(); }, 4);
  std::map<std::string, int64_t> calls;
  double inside = 0;
  for (const auto& e : br.ops) calls[e.op] = e.calls, inside += e.seconds;
  EXPECT_EQ(calls["aten::mm"], 1);
  EXPECT_EQ(calls["aten::relu"], 1);
  EXPECT_LE(inside, br.seconds);
  EXPECT_NEAR(br.outside_seconds(), br.seconds - inside, 1e-12);
  const std::string table = format_breakdown(br, 1, "pass");
  EXPECT_NE(table.find("per pass"), std::string::npos) << table;
  EXPECT_NE(table.find("(other ops)"), std::string::npos) << table;  // one op shown, the rest summed
  EXPECT_NE(table.find("(outside recorded ops)"), std::string::npos) << table;
  const OpBreakdown back = breakdown_from_json(breakdown_json(br, "pass"), "pass");
  ASSERT_EQ(back.ops.size(), br.ops.size());
  EXPECT_NEAR(back.seconds, br.seconds, 1e-12);
  for (size_t i = 0; i < br.ops.size(); ++i) {
    EXPECT_EQ(back.ops[i].op, br.ops[i].op);
    EXPECT_EQ(back.ops[i].calls, br.ops[i].calls);
    EXPECT_NEAR(back.ops[i].seconds, br.ops[i].seconds, 1e-12);
  }
  EXPECT_THROW(profile_ops([] {}, 0), std::invalid_argument);
}

TEST(FlopCounter, CountsMatmulClassOpsFromShapes) {
  auto a = torch::randn({5, 7}), b = torch::randn({7, 3});
  FlopCounter counter;
  torch::mm(a, b);                                               // 2*5*7*3 = 210
  torch::bmm(torch::randn({2, 5, 7}), torch::randn({2, 7, 3}));  // 420
  torch::nn::functional::linear(a, torch::randn({4, 7}), torch::randn({4}));  // addmm 2*5*7*4 = 280
  torch::conv1d(torch::randn({1, 2, 10}), torch::randn({3, 2, 3}));          // 2*3*2*3*8 = 288
  torch::relu(a);                                                // element-wise: not counted
  EXPECT_DOUBLE_EQ(counter.total(), 210 + 420 + 280 + 288);
  add_kernel_flops("custom", 100);
  EXPECT_DOUBLE_EQ(counter.total(), 210 + 420 + 280 + 288 + 100);
  EXPECT_DOUBLE_EQ(counter.by_op().at("kernel:custom"), 100);
}

// ---- runs: checkpoint round trip, determinism, eval

class EveryRunKind : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryRunKind, CheckpointRoundTripAndDeterminism) {
  Config c = test::fixture_config(GetParam());
  auto dir = temp_dir("run_" + GetParam());
  nlohmann::json s1 = train_run(parse_run_spec(c), (dir / "a").string(), RunOptions{true});
  nlohmann::json s2 = train_run(parse_run_spec(c), (dir / "b").string(), RunOptions{true});
  // Same seed and thread count: identical metrics.
  EXPECT_EQ(s1["metrics"], s2["metrics"]);
  for (const char* f : {"config.yaml", "metrics.jsonl", "split.json", "summary.json"})
    EXPECT_TRUE(fs::exists(dir / "a" / f)) << f;
  for (const char* key : {"task", "model", "params", "metrics", "flops", "time", "memory", "threads"})
    EXPECT_TRUE(s1.contains(key)) << key;
  EXPECT_TRUE(s1["flops"].contains("analytic_forward_per_example"));
  EXPECT_TRUE(s1["flops"].contains("measured_forward_per_example"));
  EXPECT_GT(s1["memory"]["peak_tensor_bytes"].get<int64_t>(), 0);
  EXPECT_GT(s1["memory"]["peak_rss_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(s1["threads"].get<int>(), 1);
  // The reloaded checkpoint reproduces the test metrics exactly.
  nlohmann::json e = eval_run((dir / "a").string(), RunOptions{true});
  for (auto& [k, v] : e["metrics"].items()) EXPECT_EQ(v.get<double>(), s1["metrics"][k].get<double>()) << k;
  EXPECT_TRUE(e["matches_summary"].get<bool>());
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Runs, EveryRunKind, ::testing::Values("ols", "xgboost", "mlp", "transformer"));

TEST(Runs, OlsMatchesNormalEquationsOnKnownData) {
  // y = 1 + 2 x1 - 3 x2 exactly: least squares recovers the coefficients.
  auto X = torch::randn({50, 2}, torch::kFloat64);
  auto y = 1 + 2 * X.select(1, 0) - 3 * X.select(1, 1);
  auto beta = fit_ols(X, y);
  EXPECT_NEAR(beta[0].item<double>(), 1, 1e-6);
  EXPECT_NEAR(beta[1].item<double>(), 2, 1e-6);
  EXPECT_NEAR(beta[2].item<double>(), -3, 1e-6);
}
