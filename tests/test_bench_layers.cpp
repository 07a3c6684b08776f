// `cerebra bench layers` on tiny sizes: parsed from argv like the CLI, rows written, skips recorded with a reason.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cerebra/cli/bench_layers.h"
#include "cerebra/cli/command.h"

namespace {

namespace fs = std::filesystem;

// Parses `cerebra bench layers <args...>` and runs the command; returns its exit code.
int run_command(std::vector<std::string> args) {
  CLI::App app("cerebra");
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  cerebra::Commands commands;
  auto* layers = cerebra::add_bench_layers_command(bench, commands);
  args.insert(args.begin(), {"cerebra", "bench", "layers"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  app.parse(static_cast<int>(argv.size()), argv.data());
  EXPECT_TRUE(layers->parsed());
  return (*commands.parsed())();
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

fs::path temp_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("cerebra_bench_layers_" + name + "_" +
                                          std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::remove_all(dir);
  return dir;
}

TEST(BenchLayers, WritesOneRowPerConfiguration) {
  const auto dir = temp_dir("rows");
  ASSERT_EQ(run_command({"--n", "64,128", "--d", "32", "--impls", "attention:naive,mamba", "--repeats", "1",
                         "--gemm-n", "128", "--out", dir.string()}),
            0);
  const auto lines = read_lines(dir / "results.csv");
  ASSERT_EQ(lines.size(), 5u);  // header + 2 impls x 2 lengths
  EXPECT_EQ(lines[0].rfind("impl,n,", 0), 0u);
  for (size_t i = 1; i < lines.size(); ++i) EXPECT_NE(lines[i].find(",ok,"), std::string::npos) << lines[i];
  EXPECT_EQ(lines[1].rfind("attention:naive,64,", 0), 0u) << lines[1];
  EXPECT_EQ(lines[4].rfind("mamba,128,", 0), 0u) << lines[4];

  std::ifstream in(dir / "results.json");
  const auto doc = nlohmann::json::parse(in);
  EXPECT_EQ(doc.at("threads").get<int>(), 1);
  EXPECT_GT(doc.at("gemm_gflops").get<double>(), 0.0);
  ASSERT_EQ(doc.at("results").size(), 4u);
  for (const auto& r : doc.at("results")) {
    EXPECT_GT(r.at("ms").get<double>(), 0.0);
    EXPECT_GT(r.at("gflops").get<double>(), 0.0);
    EXPECT_GT(r.at("peak_mib").get<double>(), 0.0);
  }
  fs::remove_all(dir);
}

TEST(BenchLayers, SkipsConfigurationsOverTheMemoryLimit) {
  const auto dir = temp_dir("skip");
  // Naive attention at n=128 estimates ~0.8 MiB of scores; a 0.0001 GiB (~0.1 MiB) limit skips both lengths.
  ASSERT_EQ(run_command({"--n", "64,128", "--d", "32", "--impls", "attention:naive,no_such_mixer", "--repeats",
                         "1", "--gemm-n", "128", "--mem-limit-gib", "0.0001", "--out", dir.string()}),
            2);  // unknown implementation: a usage error, nothing run
  ASSERT_EQ(run_command({"--n", "64,128", "--d", "32", "--impls", "attention:naive,lstm", "--repeats", "1",
                         "--gemm-n", "128", "--mem-limit-gib", "0.0001", "--max-lstm-n", "64", "--out",
                         dir.string()}),
            0);
  const auto lines = read_lines(dir / "results.csv");
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_NE(lines[2].find(",skipped,"), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("would need ~"), std::string::npos) << lines[2];
  EXPECT_NE(lines[4].find("raise --max-lstm-n"), std::string::npos) << lines[4];
  EXPECT_NE(lines[3].find(",ok,"), std::string::npos) << lines[3];  // lstm n=64 is small enough
  fs::remove_all(dir);
}

}  // namespace

namespace {

// --set reaches the mixers that have the key (and only them); a key no implementation has, or a bad value, is a
// usage error before any work.
TEST(BenchLayers, SetPassesMixerOptionsAndRejectsUnknownKeys) {
  const auto dir = temp_dir("set");
  // linformer_max_len 32 < n = 64: the linformer row must fail with its length error, mamba is untouched.
  ASSERT_EQ(run_command({"--n", "64", "--d", "32", "--impls", "linformer,mamba,aft:full", "--repeats", "1",
                         "--gemm-n", "128", "--set", "linformer_max_len=32", "--set", "aft_max_len=64", "--out",
                         dir.string()}),
            0);
  std::ifstream in(dir / "results.json");
  const auto doc = nlohmann::json::parse(in);
  EXPECT_EQ(doc.at("options").at("linformer_max_len").get<std::string>(), "32");
  const auto& rows = doc.at("results");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].at("status").get<std::string>(), "error");
  EXPECT_NE(rows[0].at("reason").get<std::string>().find("linformer_max_len"), std::string::npos);
  EXPECT_EQ(rows[1].at("status").get<std::string>(), "ok");
  EXPECT_EQ(rows[2].at("impl").get<std::string>(), "aft:full");
  EXPECT_EQ(rows[2].at("status").get<std::string>(), "ok");
  fs::remove_all(dir);
  EXPECT_EQ(run_command({"--n", "64", "--d", "32", "--impls", "mamba", "--set", "lsh_chunk=8", "--out",
                         dir.string()}),
            2);  // no implementation has lsh_chunk
  EXPECT_EQ(run_command({"--n", "64", "--d", "32", "--impls", "reformer", "--set", "lsh_chunk=abc", "--out",
                         dir.string()}),
            2);  // not an integer
  EXPECT_EQ(run_command({"--n", "64", "--d", "32", "--impls", "aft:quadratic", "--out", dir.string()}), 2);
  EXPECT_FALSE(fs::exists(dir / "results.csv"));
}

}  // namespace
