// The run pipeline, one for every task (include/cerebra/data/task.h) and model: build the model a task needs,
// train it and write the run directory, reload a run directory, and re-evaluate it. `cerebra train`, `eval`,
// `export`, `bench`, `sweep` and `reproduce` all go through these functions.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "cerebra/data/task.h"
#include "cerebra/models/models.h"
#include "cerebra/train/spec.h"

namespace cerebra {

class Distributed;  // cerebra/train/distributed.h

struct RunOptions {
  bool quiet = false;   // no progress display and no per-run log lines
  bool resume = false;  // continue the run in out_dir (see train_run)
  // Data-parallel training (null = one process): this process is one rank; rank 0 decides whether to resume, reads
  // the checkpoint and writes the run directory, the others write nothing and return a null summary.
  Distributed* dist = nullptr;
};

// The resume checkpoint in a run directory (include/cerebra/train/train.h, "Checkpoints"): written during training,
// removed once summary.json is written.
inline constexpr const char* kResumeCheckpointFile = "resume.pt";

// What a run directory holds, compared with a config.
struct RunProgress {
  enum class State {
    kEmpty,        // no run (no config.yaml)
    kUnfinished,   // a run of this config without summary.json
    kFinished,     // a run of this config with a complete summary.json
    kOtherConfig,  // a run of another config
  };
  State state = State::kEmpty;
  bool has_checkpoint = false;           // kUnfinished: resume.pt is there (otherwise training restarts from step 0)
  std::vector<std::string> differences;  // kOtherConfig: "key: run's value -> this config's value"
};
RunProgress run_progress(const Config& config, const std::string& run_dir);

// The model of `spec` for a task: a regression task builds the tabular models (mlp, ols, xgboost, or a mixer over
// feature tokens); a token task builds token embedding + sinusoidal positions + Backbone(mixer) + head, causal
// when the task needs it (a mixer without a causal form is refused with a ConfigError).
std::shared_ptr<Model> make_model(const ModelSpec& spec, const TaskInfo& info);
// Model names a sequence task can build: "transformer" (= attention) and every other registered mixer.
std::vector<std::string> seq_model_names();
// The checkpoint file of a model kind in its run directory: model.pt, or model.xgb.json for xgboost.
std::string checkpoint_name(const std::string& model);

// Trains the configured model and writes `out_dir`: config.yaml, the task's split (tabular: split.json),
// metrics.jsonl, the resume checkpoint during training, the checkpoint (with pruned.json for a pruned run) and
// summary.json (written last, atomically). Returns the summary. Checks before any work that out_dir is writable and,
// once the model is built, that it has room for the checkpoints. A new run first removes what an earlier run left
// (summary.json, resume.pt, pruned.json). With options.resume: an unfinished run of the same config continues from
// its resume checkpoint (from the start without one) and ends as if never stopped; a finished one is returned as
// it is, without training; a run of another config throws ConfigError listing the differing keys.
nlohmann::json train_run(const RunSpec& spec, const std::string& out_dir, const RunOptions& options);

// A run directory loaded back: its spec (from config.yaml), its task with the run's split, and its model with the
// pruned shapes, quantisation (QAT: fake quantisation; int8 exports: int8 Linear layers) and checkpoint, in eval mode.
struct LoadedRun {
  RunSpec spec;
  std::unique_ptr<Task> task;
  std::shared_ptr<Model> model;
  int threads = 1;  // as applied to this process
};
// The spec of a run directory (its config.yaml); `threads` >= 0 overrides the run's own setting, `overrides`
// (key -> value) any other key (ConfigError for an unknown key or a bad value).
RunSpec read_run_spec(const std::string& run_dir, int threads = -1,
                      const std::map<std::string, std::string>& overrides = {});
LoadedRun load_run(RunSpec spec, const std::string& run_dir);
LoadedRun load_run(const std::string& run_dir, int threads = -1);
// Only the model of a run whose spec and task are loaded (e.g. a second copy to compare against).
std::shared_ptr<Model> load_run_model(const RunSpec& spec, const TaskInfo& info, const std::string& run_dir);

// Reloads a run directory and recomputes its test metrics; "matches_summary" says whether they equal summary.json's.
// `overrides` change config keys that keep the model's parameters (e.g. eval_routing, eval_batch_size).
nlohmann::json eval_run(const std::string& run_dir, const RunOptions& options,
                        const std::map<std::string, std::string>& overrides = {});

// Metrics of `model` over a whole part of the task, batch by batch, keys prefixed (e.g. "test_accuracy").
nlohmann::json evaluate(Model& model, const Task& task, Part part, int64_t batch_size, const std::string& prefix);

// Predictions for the given rows of a part, concatenated along the batch dimension, in eval mode without gradients.
torch::Tensor predict_part(Model& model, const Task& task, Part part, const std::vector<int64_t>& rows,
                           int64_t batch_size);

// Rough peak training memory of a model on a sequence task (bytes): activations kept for backward, dense attention
// scores, output logits, parameters and optimizer state.
double estimate_train_bytes(const RunSpec& spec, const TaskInfo& info, int64_t params);

}  // namespace cerebra
