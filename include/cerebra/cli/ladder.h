// `cerebra reproduce ladder`: the difficulty ladder's tables and plots from one manifest (configs/ladder/ladder.yaml).
// Each rung is a config of the ladder (e.g. mqar_n64.yaml); on each, every model of the manifest trains at a matched
// parameter budget, at each learning rate of the sweep (the best on validation is selected) and for each seed, through
// `cerebra bench tasks` (bench_seq_tasks) into OUT/<rung>/: results.{csv,json,txt}, runs.csv, results.{png,svg}
// (the metric against realised FLOPs per token). OUT/ladder.md gathers the rung tables. Finished runs are read back,
// so an interrupted ladder resumes where it stopped.
//
// Manifest keys: `rungs` (a list of {config, seeds, budget_params, set}), `models`, `budget_params`, `lr_sweep`, `seeds` (the
// default of every rung), `sweep_seeds` (the learning rates are compared on this many seeds, the selected one runs
// on every seed; SeqBenchOptions::sweep_seeds), `set` (config overrides for every rung), `model_set` (config overrides for one model on
// every rung, e.g. `mamba: {short_conv: 0}`; a key also given on the command line is left to the command
// line) and `quick` (the same keys, for --quick; its
// `rungs` is a list of rung names to keep).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cerebra/cli/bench_seq.h"
#include "cerebra/core/config.h"

namespace cerebra {

struct LadderOptions {
  std::string manifest;                  // the manifest file
  std::string out;                       // output directory
  bool quick = false;                    // the manifest's quick variant
  std::vector<std::string> rungs;        // keep only these rungs (names: config file stems); empty = all
  std::vector<std::string> models;       // replace the manifest's models; empty = the manifest's
  int64_t seeds = 0;                     // replace every rung's seeds; 0 = the manifest's
  int64_t sweep_seeds = -1;              // replace the manifest's sweep_seeds (0 = every rate on every seed); -1 = keep
  std::vector<double> lrs;               // replace the learning-rate sweep; empty = the manifest's
  std::vector<std::pair<std::string, std::string>> overrides;  // config keys set last on every rung
  bool quiet = false;  // no progress display inside runs (each model's line and the tables are still printed)
};

struct LadderRung {
  std::string name;  // the config's file stem, e.g. "mqar_n64"; its output directory OUT/<name>
  Config config;
  std::vector<std::string> models;
  SeqBenchOptions bench;
};

// The rungs the manifest plans under `options`: configs loaded and overridden, in manifest order. ConfigError naming
// the manifest, the entry and the problem for a missing file, an unknown manifest key, a rung name not in the
// manifest, or a bad config value.
std::vector<LadderRung> plan_ladder(const LadderOptions& options);
// Runs every planned rung (bench_seq_tasks) and writes OUT/ladder.md; the exit code (non-zero when a run failed).
int run_ladder(const LadderOptions& options);

}  // namespace cerebra
