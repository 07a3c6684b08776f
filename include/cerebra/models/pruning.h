// Structured pruning scored by sensitivity per FLOP (SPEC §4, paper §3.5).
//
// Structures ("kinds"):
//   heads     attention heads of the attention mixer, and of the Cerebra layer's full path
//   ffn       hidden units of the backbone's feed-forward blocks
//   channels  output channels of the cnn mixer's gated convolutions
// Score of unit j: s_j = |ΔL_j| / FLOPs_j with the first-order Taylor estimate |ΔL_j| ≈ |Σ_{w ∈ unit j} g·w|,
// taken per training batch (gradients of the training objective) and averaged over the batches of the epoch;
// FLOPs_j is the analytic forward cost of the unit per example. Units with the lowest s_j go first.
// Schedule: at the end of epochs E_p .. E_p + E_ramp − 1 the share of removed units of each kind rises linearly to
// prune_target (of the units the model had before pruning); every group keeps at least one unit. Pruned units are
// removed for real: smaller Linear / Conv1d modules replace the old ones, so flops(), measured FLOPs and time drop.
// The kept sizes ("prune state") are saved beside the checkpoint; apply_prune_state() rebuilds those shapes in a
// fresh model before the weights are loaded.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/serialize/archive.h>

#include "cerebra/models/models.h"

namespace cerebra {


// The prune state's file beside a run's checkpoint: a fresh model takes these shapes before the weights load.
inline constexpr const char* kPruneStateFile = "pruned.json";

struct PruneSchedule {
  int64_t start_epoch = 0;  // E_p (1-based); 0 = off
  int64_t epochs = 1;       // E_ramp: pruning steps, one at the end of each epoch from E_p
  double target = 0;        // final share of each kind's units removed, in [0, 1)
  std::vector<std::string> kinds{"heads", "ffn"};

  bool enabled() const { return start_epoch > 0 && target > 0; }
  int64_t last_epoch() const { return start_epoch + epochs - 1; }
  bool active(int64_t epoch) const { return enabled() && epoch >= start_epoch && epoch <= last_epoch(); }
  // Share of units removed once epoch `epoch` has ended.
  double fraction_after(int64_t epoch) const;
};

// One prunable group of a model: the feed-forward block of a layer, or a group of its mixer.
struct ModelPruneGroup {
  std::string kind;         // heads | ffn | channels
  std::string key;          // unique in the model: "layer0.ffn", "layer1.heads", "layer0.conv1"
  int64_t layer = 0;
  int64_t mixer_group = -1;  // index into the mixer's prunable_groups(); -1 = feed-forward block
  int64_t units = 0;
  double unit_flops = 0;     // analytic forward FLOPs of one unit per example
};

std::vector<ModelPruneGroup> model_prune_groups(Model& model);
torch::Tensor group_taylor(Model& model, const ModelPruneGroup& group);  // (units) Σ g·w per unit
void prune_group(Model& model, const ModelPruneGroup& group, const std::vector<int64_t>& keep);
void mask_group(Model& model, const ModelPruneGroup& group, const std::vector<int64_t>& keep);

// {"layer0.ffn": 96, "layer0.heads": 3, ...}: units per group of the model as it is now.
nlohmann::json prune_state(Model& model);
// Gives a freshly built model the group sizes of `state` (keeps the first units; the checkpoint then supplies the
// weights and kept-index buffers). `origin` names the file for error messages.
void apply_prune_state(Model& model, const nlohmann::json& state, const std::string& origin);
// Before a run's checkpoint loads: the shapes recorded in `run_dir`/pruned.json (kPruneStateFile), when the run
// was pruned; nothing otherwise.
void load_prune_state(Model& model, const std::string& run_dir);

// Which units to keep so that `remove` units go in total, lowest score first across all groups, ties to the
// earlier group and unit, at least one unit kept per group. scores[g][j] is the score of unit j of group g.
std::vector<std::vector<int64_t>> select_keep(const std::vector<std::vector<double>>& scores, int64_t remove);

class Pruner {
 public:
  Pruner(Model& model, const PruneSchedule& schedule);
  // After each backward pass of epoch `epoch`: accumulates |Σ g·w| per unit while pruning is scheduled.
  void accumulate(int64_t epoch);
  // At the end of epoch `epoch`: prunes to the scheduled share; true when the model's shapes changed.
  bool end_epoch(int64_t epoch);
  // Units kept / original per kind, and what the last step removed.
  nlohmann::json report() const;
  // The pruner's state in a resume checkpoint: the original units, the model's current group sizes, the saliencies
  // accumulated so far this epoch and the last step's report. load() gives the model those group sizes (before its
  // weights load) and returns true when that changed its shapes.
  void save(torch::serialize::OutputArchive& ar) const;
  bool load(torch::serialize::InputArchive& ar);

 private:
  Model& model_;
  PruneSchedule schedule_;
  std::map<std::string, int64_t> original_;  // units per kind before pruning
  std::map<std::string, torch::Tensor> acc_;  // by group key
  int64_t batches_ = 0;
  nlohmann::json last_step_ = nlohmann::json::object();
};

// Writes `path` (the prune state, JSON) when `model`'s group sizes differ from those of `unpruned`, a freshly built
// model of the same config; true when written.
bool save_prune_state(Model& model, Model& unpruned, const std::string& path);

// ---- helpers for modules that prune themselves

torch::Tensor index_tensor(const std::vector<int64_t>& idx);
// Columns [u·width, (u+1)·width) + offset of each unit u, in order.
torch::Tensor unit_columns(const std::vector<int64_t>& units, int64_t width, int64_t offset = 0);
// A new Linear holding rows `out_idx` and columns `in_idx` of src (undefined = all).
torch::nn::Linear select_linear(const torch::nn::Linear& src, const torch::Tensor& out_idx, const torch::Tensor& in_idx);
// g·w of a parameter (zeros when it has no gradient).
torch::Tensor grad_times_weight(const torch::Tensor& p);

}  // namespace cerebra
