#include "cerebra/cli/command.h"
#include "cerebra/cli/flops_command.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Parses `cerebra flops <args> --json FILE` as the CLI does, runs it and returns the JSON it wrote.
json run_flops(std::vector<std::string> args) {
  const fs::path path = fs::temp_directory_path() / ("cerebra_flops_test_" + std::to_string(::getpid()) + ".json");
  CLI::App app{"test"};
  cerebra::Commands commands;
  auto* sub = cerebra::add_flops_command(&app, commands);
  EXPECT_NE(sub, nullptr);
  std::vector<std::string> argv = {"flops"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--json");
  argv.push_back(path.string());
  std::reverse(argv.begin(), argv.end());  // CLI11 takes the vector form in reverse order
  app.parse(argv);
  EXPECT_TRUE(sub->parsed());
  const auto* run = commands.parsed();
  EXPECT_NE(run, nullptr);
  EXPECT_EQ((*run)(), 0);
  std::ifstream f(path);
  json j = json::parse(f);
  fs::remove(path);
  return j;
}

TEST(FlopsCommand, SeedNumbersProjectCountsAndGrowthExponents) {
  const json j = run_flops({});  // defaults: n = 10,000, d = 512, memory_max = 64
  ASSERT_EQ(j["shape"]["n"].get<int64_t>(), 10000);
  ASSERT_EQ(j["shape"]["d"].get<int64_t>(), 512);
  const json& a = j["architectures"];
  EXPECT_EQ(a["transformer"]["seed_value"].get<double>(), 51200000000.0);
  const double n = 10000.0, d = 512.0;
  EXPECT_EQ(a["transformer"]["flops"].get<double>(), 4.0 * n * n * d + 8.0 * n * d * d);
  EXPECT_GT(a["transformer"]["n_exponent"].get<double>(), 1.8);
  EXPECT_EQ(a["lstm"]["flops"].get<double>(), 16.0 * n * d * d);
  EXPECT_NEAR(a["cerebra"]["n_exponent"].get<double>(), 1.0, 0.1);
  EXPECT_GT(a["cerebra_unbounded"]["n_exponent"].get<double>(), 1.5);
  EXPECT_NEAR(a["mamba"]["n_exponent"].get<double>(), 1.0, 1e-9);  // linear scan: no log n factor
  EXPECT_GT(a["transformer"]["memory_exponent"].get<double>(), 1.8);
  EXPECT_NEAR(a["cerebra"]["memory_exponent"].get<double>(), 1.0, 0.1);

  // The worked examples and the claims check come with it; each claim carries a verdict and a reason.
  ASSERT_EQ(j["examples"].size(), 3u);
  EXPECT_EQ(j["examples"][1]["architectures"]["transformer"]["seed_value"].get<double>(), 536870912.0);
  EXPECT_EQ(j["examples"][1]["architectures"]["cerebra"]["seed_value"].get<double>(), 524288.0);
  ASSERT_FALSE(j["claims"].empty());
  bool saw_1000x = false;
  for (const auto& c : j["claims"]) {
    EXPECT_FALSE(c["verdict"].get<std::string>().empty());
    EXPECT_FALSE(c["reason"].get<std::string>().empty());
    if (c["claim"].get<std::string>().find("1000x") != std::string::npos) {
      saw_1000x = true;
      EXPECT_EQ(c["verdict"].get<std::string>(), "NOT SUPPORTED");  // the d^2 projections dominate at n=1024
    }
  }
  EXPECT_TRUE(saw_1000x);
}

TEST(FlopsCommand, UnboundedMemoryIsQuadratic) {
  const json j = run_flops({"--memory-max", "0", "--no-examples", "--n", "4096", "--d", "256"});
  const json& a = j["architectures"];
  EXPECT_EQ(j["shape"]["memory_max"].get<int64_t>(), 0);
  EXPECT_GT(a["cerebra"]["n_exponent"].get<double>(), 1.5);
  EXPECT_NEAR(a["cerebra_bounded"]["n_exponent"].get<double>(), 1.0, 0.1);
  EXPECT_GT(a["transformer"]["n_exponent"].get<double>(), 1.8);
  EXPECT_TRUE(j["examples"].empty());
}

TEST(FlopsCommand, MemoryMaxZeroAtDefaultShape) {
  const json j = run_flops({"--memory-max", "0"});
  EXPECT_GT(j["architectures"]["cerebra"]["n_exponent"].get<double>(), 1.5);
  EXPECT_EQ(j["architectures"]["transformer"]["seed_value"].get<double>(), 51200000000.0);
}

// Every surveyed mixer has a row with its formula and exponents; the exponents tell linear from quadratic, and the
// survey's claims are checked rather than left out.
TEST(FlopsCommand, SurveyedMixersHaveFormulasExponentsAndCheckedClaims) {
  const json j = run_flops({"--no-examples", "--n", "8192", "--d", "256", "--lsh-chunk", "16"});
  const json& a = j["architectures"];
  for (const char* id : {"longformer", "linformer", "performer", "reformer", "aft_full", "aft_simple", "aft_local",
                         "rwkv", "s4d", "mamba2"}) {
    ASSERT_TRUE(a.contains(id)) << id;
    EXPECT_GT(a[id]["flops"].get<double>(), 0.0) << id;
    EXPECT_FALSE(a[id]["project_formula"].get<std::string>().empty()) << id;
    if (std::string(id) != "aft_full")
      EXPECT_NEAR(a[id]["n_exponent"].get<double>(), 1.0, 0.15) << id;  // linear in n (s4d: n log n, near 1)
    EXPECT_LE(a[id]["flops"].get<double>(), a["transformer"]["flops"].get<double>()) << id;
  }
  EXPECT_GT(a["aft_full"]["n_exponent"].get<double>(), 1.5);
  EXPECT_EQ(a["reformer"]["mixer_options"]["extra"]["lsh_chunk"].get<int64_t>(), 16);
  const double n = 8192.0, d = 256.0;
  EXPECT_EQ(a["aft_full"]["flops"].get<double>(), 8.0 * n * d * d + 4.0 * n * n * d);
  int survey_claims = 0;
  for (const auto& c : j["claims"]) {
    EXPECT_NE(c["verdict"].get<std::string>(), "NOT CHECKED") << c["claim"];
    if (c["source"].get<std::string>() == "003") ++survey_claims;
  }
  EXPECT_GE(survey_claims, 6);
}

}  // namespace
