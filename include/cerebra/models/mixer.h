// The sequence-mixer interface every architecture implements, and the registry that builds them by name.
//
// A mixer maps a padded batch of token vectors to a batch of the same shape:
//   x: (B, n, d) float, mask: (B, n) bool with true = real token (an undefined tensor means every token is real)
//   -> y: (B, n, d)
// Padded positions may hold any value in y; callers must not read them.
//
// FLOP convention (one source of truth for estimator, `cerebra flops` and reports): 2 FLOPs per multiply-add of
// the matmul-class operations (linear layers, attention products, convolutions, scans). Element-wise work (norms,
// activations, softmax) is not counted, because the measured counter (core/flop_counter.h) reads only the
// matmul-class ATen ops that ran, and the two must agree.
#pragma once

#include <any>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <stdexcept>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>

#include "cerebra/core/config.h"

namespace cerebra {

// Options every mixer receives from the backbone, plus the mixer's own typed options (`own`: the struct its
// registration parses from the config, e.g. MambaOptions; empty = that struct's defaults).
struct MixerOptions {
  int64_t d_model = 64;
  int64_t n_heads = 4;
  bool causal = false;
  double dropout = 0.0;
  std::any own;

  // The mixer's own options as type O (O's defaults when `own` is empty).
  template <class O>
  O own_as() const {
    if (!own.has_value()) return O{};
    if (const O* o = std::any_cast<O>(&own)) return *o;
    throw std::invalid_argument("mixer options: the options given are not of the mixer's own options type");
  }
};

// One group of prunable structures of a mixer: units of one kind that can be removed one by one
// (see cerebra/pruning.h). `unit_flops` is the analytic forward FLOPs one unit costs per sequence of n tokens.
struct PrunableGroup {
  std::string kind;  // "heads" | "channels"
  std::string name;  // unique within the mixer, e.g. "heads", "conv0"
  int64_t units = 0;
  double unit_flops = 0;
};

// What a causal mixer keeps of the tokens it has seen, so that the next ones cost what one recurrent step costs: a
// key/value cache (attention), a recurrent state (lstm, mamba, ...), a ring buffer of recent inputs (cnn). Named
// tensors, so each mixer keeps what it needs; `position` counts the tokens seen.
struct MixerState {
  int64_t position = 0;
  std::map<std::string, torch::Tensor> tensors;
  int64_t bytes() const;  // memory the tensors hold
  bool has(const std::string& key) const { return tensors.count(key) > 0; }
};

class SequenceMixer : public torch::nn::Module {
 public:
  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) = 0;
  // Analytic forward FLOPs for one sequence of n tokens (matmul-class ops, 2 per multiply-add).
  virtual double flops(int64_t n) const = 0;
  // Whether the output at position i depends only on inputs at positions <= i.
  virtual bool is_causal() const = 0;

  // ---- causal generation (mixers whose is_causal() is true) ----
  // x: (B, m, d), the m real tokens that follow the `state.position` tokens the state has seen (a fresh state has
  // seen none) -> (B, m, d): the rows the full causal forward over all position + m tokens gives at the last m
  // positions (float rounding aside), in the mixer's current mode (eval for generation). Advances the state by m.
  // The default keeps every input it has seen and re-runs forward() over them: right for any causal mixer, at a
  // cost that grows with the prefix; mixers with a state of their own override it and has_recurrent_step().
  virtual torch::Tensor step(const torch::Tensor& x, MixerState& state);
  virtual bool has_recurrent_step() const { return false; }
  // The mixer's own options as {key: value} (the keys of its registration), as built.
  virtual nlohmann::json own_options() const;  // default: {}
  // An auxiliary loss the mixer wants added to the objective (undefined when none).
  virtual torch::Tensor aux_loss() { return {}; }

  // ---- compute-aware mixers (Cerebra); static mixers keep these defaults ----
  // Expected FLOPs of the last forward, differentiable in the gates, summed over the batch (undefined = fixed cost).
  virtual torch::Tensor expected_flops() { return {}; }
  // FLOPs the last forward actually executed, summed over the batch (negative = flops(n) per sequence).
  virtual double realised_flops() const { return -1.0; }
  // The same per sequence of the last forward (B entries; empty = flops(n) for each).
  virtual std::vector<double> realised_flops_per_sequence() const { return {}; }
  // Statistics of the last forward for logging, e.g. {"gate_mean": 0.31, "tokens_routed": 16}.
  virtual std::map<std::string, double> stats() const { return {}; }
  // Schedule hooks the trainer calls: Gumbel/gate temperature, exploration, and dense mode (every token on the full path,
  // compressor off) for the warm-up epochs of the recipe.
  virtual void set_temperature(double tau) {}
  // Exploration in [0, 1]: 1 − the λ ramp's progress; a router with annealed noise scales its noise by it.
  virtual void set_exploration(double scale) {}
  virtual void set_dense(bool dense) {}

  // ---- Mixture-of-Depths: a mixer that decides which tokens its block's feed-forward runs on ----
  // The backbone gives the mixer the FLOPs per token of its block's feed-forward (0 = none). A mixer whose
  // owns_feedforward() is true counts that work in flops / realised / expected, and after each forward tells the
  // backbone the tokens the feed-forward runs on, (B, n) bool, and their output factor, (B, n) float (undefined:
  // every token, factor 1).
  virtual void set_feedforward_flops(double per_token) {}
  virtual bool owns_feedforward() const { return false; }
  virtual torch::Tensor feedforward_tokens() const { return {}; }
  virtual torch::Tensor feedforward_scale() const { return {}; }

  // ---- structured pruning (cerebra/pruning.h); mixers without prunable structures keep these defaults ----
  virtual std::vector<PrunableGroup> prunable_groups(int64_t n) const { return {}; }
  // (units) Σ g·w over each unit's parameters from their .grad(): the first-order Taylor estimate of the change in
  // the loss when the unit is removed (up to sign). Undefined when no gradient is present.
  virtual torch::Tensor unit_taylor(size_t group) const { return {}; }
  // Removes every unit of the group not in `keep` (ascending indices): smaller weight tensors replace the old ones.
  virtual void prune_units(size_t group, const std::vector<int64_t>& keep) {}
  // Zeroes the units not in `keep` without changing any shape: the masked model the pruned one must equal.
  virtual void mask_units(size_t group, const std::vector<int64_t>& keep) {}
};

// A mixer's registration: its name, its own config keys (group "mixer <name>" in --help), how its typed options
// are parsed from a config, and its factory. A built mixer reports its options with own_options().
struct MixerDef {
  std::string name;
  std::vector<KeySpec> keys;
  // Typed options from a config (the spec parse; only the mixer's own keys are read). Throws ConfigError.
  std::function<std::any(const Config&)> parse;
  std::function<std::shared_ptr<SequenceMixer>(const MixerOptions&)> make;
};

// Registers the mixer and its config keys (static initialisation); a name registered twice is a logic error.
void register_mixer(MixerDef def);
std::shared_ptr<SequenceMixer> make_mixer(const std::string& name, const MixerOptions& options);
std::vector<std::string> mixer_names();
const MixerDef& mixer_def(const std::string& name);  // std::invalid_argument for an unknown name

// `common` with the mixer's own options parsed from `overrides` (key -> value text) over its defaults: how tools and
// tests build a mixer with chosen options without a config file. Unknown keys and bad values throw ConfigError.
MixerOptions with_own_options(const std::string& mixer, MixerOptions common,
                              const std::map<std::string, std::string>& overrides);

// Builds a MixerDef from a typed options struct O: `parse` returns O, `make` takes the common options and O. Registers at static-initialisation time: `static MixerRegistration reg(define_mixer<O>(...));`
template <class O>
MixerDef define_mixer(std::string name, std::vector<KeySpec> keys, std::function<O(const Config&)> parse,
                      std::function<std::shared_ptr<SequenceMixer>(const MixerOptions&, const O&)> make) {
  MixerDef def;
  def.name = std::move(name);
  for (auto& k : keys) k.group = "mixer " + def.name;
  def.keys = std::move(keys);
  def.parse = [parse](const Config& c) { return std::any(parse(c)); };
  def.make = [make](const MixerOptions& o) { return make(o, o.own_as<O>()); };
  return def;
}

struct MixerRegistration {
  explicit MixerRegistration(MixerDef def) { register_mixer(std::move(def)); }
};

}  // namespace cerebra
