// `cerebra bench tasks` on a sequence task: every model at a matched parameter budget, the best of a learning-rate
// sweep on validation, mean ± std over seeds; finished runs are reused, unfinished ones continued.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cerebra/core/config.h"
#include "cerebra/data/seq_tasks.h"

namespace cerebra {

struct SeqBenchOptions {
  int64_t n = 0;               // sequence length (max_len for wordnet); 0 = the config's
  int64_t budget_params = 0;   // match parameters by choosing d_model per model; 0 = the config's d_model
  double mem_limit_gib = 8.0;  // skip models whose estimated training memory exceeds this
  std::vector<double> lrs;     // --lr-sweep: each model trains at each learning rate (empty = the config's lr)
  int64_t seeds = 1;           // --seeds: runs per (model, lr), seeds seed, seed + 1, ...; mean ± std over them
  int64_t sweep_seeds = 0;     // --sweep-seeds: with several lrs, each lr trains on this many seeds (selection on
                               // their mean) and only the selected lr on all `seeds`; 0 = every lr on every seed
  // Config keys set for one model only, after the shared config (e.g. mamba: short_conv=0, for a mixer that a shared
  // setting hurts); listed in the table under the model's name.
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> model_set;
  bool quiet = false;       // no output but the table
  bool quiet_runs = false;  // no progress display inside each run (the per-model lines stay)
};
int bench_seq_tasks(const Config& base, const std::vector<std::string>& models, const std::string& out_dir,
                    const SeqBenchOptions& options);
// The learning rates of `--lr-sweep 1e-3,3e-3,1e-2` (each > 0, at least one); ConfigError naming a bad entry.
std::vector<double> parse_lr_sweep(const std::string& list);
// The run whose validation metric is best (largest when higher_is_better, else smallest) among `val_metric`, one
// entry per run; NaN marks a run without a result (skipped or failed) and is never picked. Ties go to the earlier
// run. -1 when no run has a result.
int64_t select_best_run(const std::vector<double>& val_metric, bool higher_is_better);
// The d_model (a multiple of 2·n_heads, at most 2048) whose model has the parameter count closest to `budget`.
int64_t match_d_model(const Config& config, const TaskInfo& info, int64_t budget);

}  // namespace cerebra
