// `cerebra reproduce ladder`: the manifest's plan (rungs, models, learning rates, seeds, overrides, the quick
// variant), its errors, and one tiny ladder run end to end.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cerebra/cli/ladder.h"
#include "cerebra/core/config.h"
#include "cerebra/core/io.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace cerebra;

namespace {

// A ladder directory with two tiny MQAR rungs and a manifest `text`.
fs::path write_ladder(const std::string& name, const std::string& manifest) {
  const fs::path dir = test::temp_dir(name);
  const std::string rung =
      "task: mqar\nthreads: 1\nd_model: 16\nn_heads: 2\nn_layers: 1\ndropout: 0\nvocab_size: 16\nn_pairs: 4\n"
      "val_examples: 8\ntest_examples: 8\nbatch_size: 8\neval_batch_size: 8\nsteps: 2\n";
  std::ofstream(dir / "mqar_a.yaml") << rung << "seq_len: 24\n";
  std::ofstream(dir / "mqar_b.yaml") << rung << "seq_len: 32\n";
  std::ofstream(dir / "ladder.yaml") << manifest;
  return dir;
}

const char* kManifest =
    "models: [transformer, lstm]\n"
    "budget_params: 5000\n"
    "lr_sweep: [1e-3, 1e-2]\n"
    "seeds: 1\n"
    "sweep_seeds: 1\n"
    "set: {steps: 3}\n"
    "model_set: {transformer: {short_conv: 2}}\n"
    "rungs:\n"
    "  - {config: mqar_a.yaml, seeds: 2}\n"
    "  - {config: mqar_b.yaml, budget_params: 7000, set: {vocab_size: 20}}\n"
    "quick:\n"
    "  rungs: [mqar_b]\n"
    "  models: transformer\n"
    "  lr_sweep: [3e-3]\n"
    "  set: {steps: 1}\n";

std::string config_error(const LadderOptions& o) {
  try {
    plan_ladder(o);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Ladder, PlansRungsModelsRatesSeedsAndOverrides) {
  const fs::path dir = write_ladder("ladder_plan", kManifest);
  LadderOptions o;
  o.manifest = (dir / "ladder.yaml").string();
  auto rungs = plan_ladder(o);
  ASSERT_EQ(rungs.size(), 2u);
  EXPECT_EQ(rungs[0].name, "mqar_a");
  EXPECT_EQ(rungs[0].models, (std::vector<std::string>{"transformer", "lstm"}));
  EXPECT_EQ(rungs[0].bench.lrs, (std::vector<double>{1e-3, 1e-2}));
  EXPECT_EQ(rungs[0].bench.budget_params, 5000);
  EXPECT_EQ(rungs[1].bench.budget_params, 7000);  // the rung's own
  EXPECT_EQ(rungs[0].bench.seeds, 2);  // the rung's own
  EXPECT_EQ(rungs[1].bench.seeds, 1);  // the manifest's
  EXPECT_EQ(rungs[0].bench.sweep_seeds, 1);
  EXPECT_EQ(rungs[0].config.get_int("steps"), 3);  // the manifest's set over the rung config
  EXPECT_EQ(rungs[0].config.get_int("seq_len"), 24);
  EXPECT_EQ(rungs[1].config.get_int("vocab_size"), 20);  // the rung's set
  EXPECT_EQ(rungs[0].config.get_int("vocab_size"), 16);
  // model_set: one model's own keys, kept apart from the shared config.
  EXPECT_EQ(rungs[0].bench.model_set.at("transformer"),
            (std::vector<std::pair<std::string, std::string>>{{"short_conv", "2"}}));
  EXPECT_EQ(rungs[0].config.get_int("short_conv"), 0);
  // A key the command line sets is the command line's for every model, model_set's included.
  o.overrides = {{"short_conv", "3"}};
  rungs = plan_ladder(o);
  EXPECT_EQ(rungs[0].bench.model_set.count("transformer"), 0u);
  EXPECT_EQ(rungs[0].config.get_int("short_conv"), 3);
  o.overrides.clear();

  // The quick variant: its rungs, models, rates and set; command-line options over everything.
  o.quick = true;
  rungs = plan_ladder(o);
  ASSERT_EQ(rungs.size(), 1u);
  EXPECT_EQ(rungs[0].name, "mqar_b");
  EXPECT_EQ(rungs[0].models, (std::vector<std::string>{"transformer"}));
  EXPECT_EQ(rungs[0].bench.lrs, (std::vector<double>{3e-3}));
  EXPECT_EQ(rungs[0].config.get_int("steps"), 1);
  o.rungs = {"mqar_a"};
  o.models = {"cnn"};
  o.seeds = 3;
  o.lrs = {5e-3};
  o.overrides = {{"steps", "7"}};
  rungs = plan_ladder(o);
  ASSERT_EQ(rungs.size(), 1u);
  EXPECT_EQ(rungs[0].name, "mqar_a");
  EXPECT_EQ(rungs[0].models, (std::vector<std::string>{"cnn"}));
  EXPECT_EQ(rungs[0].bench.seeds, 3);
  EXPECT_EQ(rungs[0].bench.sweep_seeds, 1);  // the manifest's, kept
  o.sweep_seeds = 0;
  EXPECT_EQ(plan_ladder(o)[0].bench.sweep_seeds, 0);  // the command line's
  EXPECT_EQ(rungs[0].bench.lrs, (std::vector<double>{5e-3}));
  EXPECT_EQ(rungs[0].config.get_int("steps"), 7);
  fs::remove_all(dir);
}

TEST(Ladder, ManifestErrorsNameTheFileTheLineAndTheProblem) {
  struct Case {
    std::string manifest, expected;
  };
  const std::vector<Case> cases = {
      {"models: [transformer]\nrungs:\n  - {config: mqar_a.yaml, seed: 2}\n", "ladder.yaml:3: unknown key 'seed'"},
      {"models: [transformer]\nrungz: []\n", "unknown key 'rungz' in the manifest"},
      {"models: [transformer]\nrungs:\n  - {config: missing.yaml}\n", "missing.yaml not found"},
      {"models: [transformer]\nlr_sweep: [1e-3, fast]\nrungs:\n  - {config: mqar_a.yaml}\n", "'fast' is not a learning rate"},
      {"models: [transformer]\nseeds: 0\nrungs:\n  - {config: mqar_a.yaml}\n", "seeds must be >= 1"},
      {"models: [transformer]\nrungs:\n  - {config: mqar_a.yaml, set: {steps: many}}\n", "steps"},
      {"rungs:\n  - {config: mqar_a.yaml}\n", "expected `models:`"},
      {"models: [transformer]\nrungs: [\n", "YAML syntax error"},
      {"models: [transformer]\nmodel_set: {mambo: {short_conv: 0}}\nrungs:\n  - {config: mqar_a.yaml}\n",
       "ladder.yaml:2: model_set: unknown model 'mambo'"},
      {"models: [transformer]\nmodel_set: {mamba: {short_conv: wide}}\nrungs:\n  - {config: mqar_a.yaml}\n",
       "short_conv"},
      {"models: [transformer]\nmodel_set: {mamba: 0}\nrungs:\n  - {config: mqar_a.yaml}\n",
       "model_set mamba: expected a mapping"},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.manifest);
    const fs::path dir = write_ladder("ladder_errors", k.manifest);
    LadderOptions o;
    o.manifest = (dir / "ladder.yaml").string();
    const std::string message = config_error(o);
    EXPECT_NE(message.find(k.expected), std::string::npos) << message;
    fs::remove_all(dir);
  }
  const fs::path dir = write_ladder("ladder_errors", kManifest);
  LadderOptions o;
  o.manifest = (dir / "ladder.yaml").string();
  o.rungs = {"mqar_c"};
  const std::string message = config_error(o);
  EXPECT_NE(message.find("no rung named 'mqar_c' (rungs: mqar_a, mqar_b)"), std::string::npos) << message;
  fs::remove_all(dir);
}

TEST(Ladder, RunsEachRungIntoItsDirectoryAndGathersTheTables) {
  const fs::path dir = write_ladder("ladder_run", kManifest);
  LadderOptions o;
  o.manifest = (dir / "ladder.yaml").string();
  o.out = (dir / "out").string();
  o.quiet = true;
  o.models = {"transformer"};
  o.lrs = {1e-3};
  o.seeds = 1;
  ASSERT_EQ(run_ladder(o), 0);
  for (const char* rung : {"mqar_a", "mqar_b"}) {
    SCOPED_TRACE(rung);
    const auto results = nlohmann::json::parse(std::ifstream(dir / "out" / rung / "results.json"));
    ASSERT_EQ(results.size(), 1u);
    EXPECT_EQ(results[0]["status"], "ok");
    EXPECT_EQ(results[0]["params"].get<int64_t>() > 0, true);
    EXPECT_TRUE(fs::exists(dir / "out" / rung / "transformer" / "lr0.001" / "summary.json"));
    // The model's own setting reached its run and is named in the results.
    EXPECT_EQ(results[0]["set"], "short_conv=2");
    Config run_config;
    run_config.load_yaml_file((dir / "out" / rung / "transformer" / "lr0.001" / "config.yaml").string());
    EXPECT_EQ(run_config.get_int("short_conv"), 2);
  }
  const std::string md = read_text_file(dir / "out" / "ladder.md");
  EXPECT_NE(md.find("## mqar_a"), std::string::npos) << md;
  EXPECT_NE(md.find("## mqar_b"), std::string::npos) << md;
  EXPECT_NE(md.find("(n = 32"), std::string::npos) << md;
  EXPECT_NE(md.find("transformer trains with short_conv 2"), std::string::npos) << md;
  fs::remove_all(dir);
}
