// The run's typed spec: every mixer option reaches the mixer it configures, mixer keys are rejected with "did you
// mean", a pruned run exports to int8 and evaluates, and the tiled attention kernel trains like the naive one.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "cerebra/cli/export_command.h"
#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/mixer.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace cerebra {
namespace {

namespace fs = std::filesystem;
using test::error_of;
using test::temp_dir;

// A value of `key` different from its default that every mixer accepts (ints keep their parity: odd kernels stay odd).
std::string other_value(const KeySpec& k) {
  switch (k.type) {
    case ValueType::Int: return std::to_string(std::stoll(k.default_value) + 2);
    case ValueType::Float: {
      const double v = std::stod(k.default_value);
      return v == 0.0 ? "0.125" : std::to_string(v * 0.5);
    }
    case ValueType::Bool: return k.default_value == "true" ? "false" : "true";
    case ValueType::String:
      for (const auto& c : k.choices)
        if (c != k.default_value) return c;
      return k.default_value + "x";
  }
  return k.default_value;
}

// Walks the registry: each mixer's own keys are in the config schema under "mixer <name>" (so --help lists them),
// and setting any one of them in a config changes what the built mixer reports, end to end through the spec.
TEST(MixerRegistry, EveryOptionIsSetFromAConfig) {
  const auto names = mixer_names();
  ASSERT_GE(names.size(), 5u);
  int checked = 0;
  for (const auto& name : names) {
    const MixerDef& def = mixer_def(name);
    for (const auto& key : def.keys) {
      SCOPED_TRACE(name + "." + key.name);
      const KeySpec* in_schema = Config::find_key(key.name);
      ASSERT_NE(in_schema, nullptr);
      EXPECT_NE(in_schema->group.find("mixer " + name), std::string::npos) << in_schema->group;
      Config c = test::fixture_config(name == "attention" ? "transformer" : name);
      c.set("d_model", "16", "test");
      c.set("n_heads", "4", "test");
      const std::string value = other_value(key);
      c.set(key.name, value, "test");
      const RunSpec spec = parse_run_spec(c);
      auto mixer = make_mixer(name, spec.model.backbone.mixer_options);
      const nlohmann::json got = mixer->own_options();
      ASSERT_TRUE(got.contains(key.name)) << got.dump();
      Config expect;
      expect.set(key.name, value, "test");
      EXPECT_EQ(got[key.name], expect.to_json()[key.name]) << got.dump();
      // and the default config builds the default (an `auto` default reports what it resolved to)
      if (key.default_value == "auto") {
        ++checked;
        continue;
      }
      const RunSpec base = parse_run_spec(test::fixture_config(name == "attention" ? "transformer" : name));
      EXPECT_EQ(make_mixer(name, base.model.backbone.mixer_options)->own_options()[key.name],
                Config().to_json()[key.name]);
      ++checked;
    }
  }
  EXPECT_GE(checked, 20);
}

TEST(MixerRegistry, UnknownOwnKeyIsRejectedWithASuggestion) {
  Config c;
  const std::string msg = error_of([&] { c.set("d_stat", "8", "test"); });
  EXPECT_NE(msg.find("did you mean 'd_state'"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { c.set("attention_impl", "fast", "test"); }).find("auto, naive, tiled"), std::string::npos);
}

// The spec is checked before any data is read: a bad value names its key.
TEST(RunSpec, ChecksBeforeWork) {
  Config c = test::fixture_config("transformer");
  c.set("threads", "-1", "test");
  EXPECT_NE(error_of([&] { parse_run_spec(c); }).find("threads must be >= 0"), std::string::npos);
  Config q = test::fixture_config("ols");
  q.set("qat", "true", "test");
  EXPECT_NE(error_of([&] { parse_run_spec(q); }).find("qat: true needs a neural model"), std::string::npos);
}

// attention_impl decides which kernel runs, end to end from a config: the FLOP counter sees the tiled kernel's
// products exactly when it is chosen (tiled always, naive never, auto from 64 tokens).
TEST(RunSpec, AttentionImplChoosesTheKernelThatRuns) {
  for (const std::string impl : {"naive", "tiled", "auto"}) {
    Config c = test::fixture_config("transformer");
    c.set("attention_impl", impl, "test");
    auto mixer = make_mixer("attention", parse_run_spec(c).model.backbone.mixer_options);
    for (const int64_t n : {8, 64}) {
      SCOPED_TRACE(impl + " n=" + std::to_string(n));
      torch::NoGradGuard g;
      FlopCounter counter;
      mixer->forward(torch::randn({2, n, 16}), {});
      const bool tiled_ran = counter.by_op().count("kernel:tiled_attention") > 0;
      EXPECT_EQ(tiled_ran, impl == "tiled" || (impl == "auto" && n >= 64));
    }
  }
}

// The tiled kernel trains: a Transformer with attention_impl tiled reaches the naive kernel's test metric (the same
// function; float rounding differs, so the trajectories may drift apart a little).
TEST(RunSpec, TiledAttentionTrainsLikeNaive) {
  auto dir = temp_dir("tiled_trains");
  double rmse[2];
  int i = 0;
  for (const std::string impl : {"naive", "tiled"}) {
    Config c = test::fixture_config("transformer");
    c.set("attention_impl", impl, "test");
    nlohmann::json s = train_run(parse_run_spec(c), (dir / impl).string(), RunOptions{true});
    rmse[i++] = s["metrics"]["test_rmse"].get<double>();
  }
  std::printf("  test RMSE naive %.6f tiled %.6f\n", rmse[0], rmse[1]);
  EXPECT_NEAR(rmse[1], rmse[0], 0.01 * rmse[0]);
  fs::remove_all(dir);
}

// A pruned run exports to int8 (its pruned shapes are rebuilt before loading) and the export evaluates.
TEST(RunSpec, PrunedRunExportsToInt8AndEvaluates) {
  Config c = test::fixture_config("transformer");
  c.set("epochs", "3", "test");
  c.set("prune_start_epoch", "2", "test");
  c.set("prune_epochs", "1", "test");
  c.set("prune_target", "0.5", "test");
  auto dir = temp_dir("pruned_int8");
  const std::string run = (dir / "run").string();
  train_run(parse_run_spec(c), run, RunOptions{true});
  ASSERT_TRUE(fs::exists(dir / "run" / "pruned.json"));
  Int8ExportOptions o;
  o.run_dir = run;
  o.repeats = 1;
  o.quiet = true;
  nlohmann::json r = export_int8(o);
  EXPECT_GT(r["linear_layers_int8"].get<int64_t>(), 0);
  nlohmann::json ev = eval_run(run + "-int8", RunOptions{true});
  EXPECT_TRUE(ev["matches_summary"].get<bool>());
  EXPECT_TRUE(ev["quant"]["int8"].get<bool>());
  fs::remove_all(dir);
  fs::remove_all(run + "-int8");
}

}  // namespace
}  // namespace cerebra
