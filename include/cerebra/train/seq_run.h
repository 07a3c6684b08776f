// Runs of the sequence tasks (dispatched from train_run / eval_run, include/cerebra/train/train.h), the sequence
// model every registered mixer powers, and what `cerebra bench tasks` needs to size models on a sequence task.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cerebra/data/seq_tasks.h"
#include "cerebra/models/models.h"

namespace cerebra {

struct RunSpec;
struct RunOptions;

// The sequence model: token embedding + sinusoidal positions + Backbone(mixer) + head. model: "transformer"
// (= attention) or any registered mixer. For causal tasks the mixer is built causal, and a mixer without a causal
// form is refused with a ConfigError.
std::shared_ptr<Model> make_seq_model(const ModelSpec& spec, const SeqTaskInfo& info);
std::vector<std::string> seq_model_names();

nlohmann::json seq_train_run(const RunSpec& spec, const std::string& out_dir, const RunOptions& options);
nlohmann::json seq_eval_run(const RunSpec& spec, const std::string& run_dir, const RunOptions& options);

// Rough peak training memory of a model on a task (bytes): activations kept for backward, dense attention scores,
// output logits, parameters and optimizer state.
double estimate_train_bytes(const RunSpec& spec, const SeqTaskInfo& info, int64_t params);

}  // namespace cerebra
