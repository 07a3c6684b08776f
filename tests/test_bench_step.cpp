// `cerebra bench step` on the CPS1988 fixture: parsed from argv like the CLI, every timed step reported with a
// positive time, the measured forward FLOPs equal to the model's analytic count, bad options refused with a message.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cerebra/cli/bench_step.h"
#include "cerebra/cli/command.h"
#include "test_helpers.h"

namespace {

namespace fs = std::filesystem;
using cerebra::test::error_of;
using cerebra::test::source_path;

// A model (a transformer of width 16 unless told) on the fixture, one thread.
std::vector<std::string> fixture_args(const std::string& model = "transformer") {
  return {"--task", "cps1988", "--data", source_path("data/fixtures/cps1988_small.csv"), "--model", model,
          "--threads", "1", "--d_model", "16", "--n_heads", "2", "--batch_size", "32"};
}

// Parses `cerebra bench step <args...>` and runs the command; returns its exit code (errors are thrown).
int run_command(std::vector<std::string> args) {
  CLI::App app("cerebra");
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  cerebra::Commands commands;
  auto* step = cerebra::add_bench_step_command(bench, source_path(""), commands);
  args.insert(args.begin(), {"cerebra", "bench", "step"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  app.parse(static_cast<int>(argv.size()), argv.data());
  EXPECT_TRUE(step->parsed());
  return (*commands.parsed())();
}

TEST(BenchStep, ReportsEveryTimedStepAndTheMeasuredFlops) {
  const auto dir = cerebra::test::temp_dir("bench_step");
  auto args = fixture_args();
  for (const char* a : {"--warmup", "1", "--steps", "3"}) args.emplace_back(a);
  args.insert(args.end(), {"--json", (dir / "step.json").string(), "--export", (dir / "shared.pt").string()});
  ASSERT_EQ(run_command(args), 0);
  std::ifstream in(dir / "step.json");
  const auto r = nlohmann::json::parse(in);
  EXPECT_EQ(r.at("steps").get<int>(), 3);
  EXPECT_EQ(r.at("warmup").get<int>(), 1);
  EXPECT_EQ(r.at("threads").get<int>(), 1);
  ASSERT_EQ(r.at("step_ms").size(), 3u);
  for (const auto& ms : r.at("step_ms")) EXPECT_GT(ms.get<double>(), 0.0);
  EXPECT_GT(r.at("median_ms").get<double>(), 0.0);
  EXPECT_GT(r.at("examples_per_s").get<double>(), 0.0);
  EXPECT_EQ(r.at("batch").at("size").get<int64_t>(), 32);
  // 2 numeric + 4 categorical features + CLS = 7 tokens per example.
  EXPECT_DOUBLE_EQ(r.at("batch").at("tokens").get<double>(), 32.0 * 7.0);
  double shares = 0;
  for (const char* phase : {"forward", "backward", "optimizer"}) {
    const double s = r.at("phases").at(phase).at("share").get<double>();
    EXPECT_GT(s, 0.0) << phase;
    shares += s;
  }
  EXPECT_NEAR(shares, 1.0, 1e-9);
  // Naive attention at 7 tokens: every matmul-class op of the forward is one the analytic count knows.
  const auto& f = r.at("flops");
  EXPECT_DOUBLE_EQ(f.at("measured_forward_per_batch").get<double>(),
                   32.0 * f.at("analytic_forward_per_example").get<double>());
  EXPECT_GT(f.at("measured_backward_per_batch").get<double>(), f.at("measured_forward_per_batch").get<double>());
  EXPECT_TRUE(std::isfinite(r.at("check").at("eval_loss").get<double>()));
  EXPECT_GT(r.at("params").get<int64_t>(), 0);
  EXPECT_GT(fs::file_size(dir / "shared.pt"), 0u);
  fs::remove_all(dir);
}

TEST(BenchStep, RefusesBadOptionsWithAMessage) {
  auto with = [](std::vector<std::string> extra) {
    auto args = fixture_args();
    args.insert(args.end(), extra.begin(), extra.end());
    return error_of([&] { run_command(args); });
  };
  EXPECT_NE(with({"--steps", "0"}).find("--steps must be >= 1"), std::string::npos);
  EXPECT_NE(with({"--warmup", "-1"}).find("--warmup must be >= 0"), std::string::npos);
  EXPECT_NE(with({"--d_modle", "8"}).find("d_model"), std::string::npos);  // unknown key: "did you mean"
  EXPECT_NE(error_of([] { run_command(fixture_args("ols")); }).find("fitted by its own method"), std::string::npos);
  EXPECT_THROW(run_command({"--steps", "many"}), CLI::ParseError);
}

}  // namespace
