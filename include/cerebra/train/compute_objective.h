// Compute as part of the objective (SPEC §3, paper §3.1 and §3.6): J = L_task + λ·C (+ auxiliary losses), where
// C = expected FLOPs per example / FLOPs per example of the dense Transformer of the same shape (dimensionless).
// For padded batches of variable-length text the same shape is each example's real length: C is the batch's
// expected FLOPs over the dense FLOPs of its real tokens, so λ means the same on short glosses as on long ones.
// The recipe's schedule: warm epochs dense with λ = 0, then router and compressor on with λ₀, a linear ramp to λ_T
// over the ramp epochs while the gate temperature anneals geometrically from τ to τ_min.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "cerebra/models/models.h"

namespace cerebra {


// Positions are epochs of training completed (epoch e starts at e − 1; a step-budget run is one epoch, so 0.5 is its
// middle step). Warm-up and ramp may be fractional: a schedule with a fractional part advances at every step,
// a whole-epoch one at epoch starts.
struct ComputeSchedule {
  double warm_epochs = 0, ramp_epochs = 0;
  double lambda0 = 0, lambda_target = 0, tau = 1.0, tau_min = 1.0;

  bool dense(double position) const { return position < warm_epochs; }
  double lambda(double position) const;
  double temperature(double position) const;
  // 1 − the ramp's progress: 1 until the ramp starts, 0 from its end (and always 0 without a ramp). The scale of the
  // router's annealed training noise.
  double exploration(double position) const;
  bool per_step() const;  // warm_epochs or ramp_epochs has a fractional part
  // The first 1-based epoch that starts after the warm-up and the ramp.
  int64_t first_epoch_after_ramp() const;
};

// FLOPs per example of a model split into what its compute-aware mixers decide and everything else.
struct ComputeBreakdown {
  double static_flops = 0;  // FLOPs of the parts whose cost is fixed (embeddings, feed-forward, head, ...)
  double dense_flops = 0;   // the same model with dense softmax attention in place of every compute-aware mixer
};
ComputeBreakdown compute_breakdown(const Model& model);

class ComputeObjective {
 public:
  ComputeObjective(Model& model, const ComputeSchedule& schedule);

  bool active() const { return adaptive_; }  // the model has compute-aware mixers
  void begin_epoch(int64_t epoch);           // dense mode, temperature, λ for this epoch (1-based)
  // Before each optimiser step, at `position` epochs completed: a per-step schedule moves dense mode, λ and τ.
  void begin_step(double position);
  // Task loss of the last forward of `batch_size` examples -> the objective J. `mask` (B, n), true = real token,
  // when the batch is padded: C is then normalised by the dense FLOPs at the examples' real lengths.
  torch::Tensor objective(const torch::Tensor& task_loss, int64_t batch_size, const torch::Tensor& mask = {});
  // Dense FLOPs per example at a real length of `length` tokens (the normaliser of C for padded batches).
  double dense_flops_at(int64_t length) const;
  // Mean of dense_flops_at over the real lengths of a padded batch's mask (B, n), true = real token.
  double dense_flops_of(const torch::Tensor& mask) const;

  // After a forward of `batch_size` examples: realised FLOPs per example (what ran) and expected (from the gates).
  double realised_per_example(int64_t batch_size) const;
  // Realised FLOPs of each example of the last forward relative to the dense model (batch_size entries): the
  // sampler's Ĉ. Mixers that do not report per sequence count flops(n); moe work dropped for capacity is shared
  // evenly over the batch.
  std::vector<double> realised_relative_per_example(int64_t batch_size) const;
  double expected_per_example(int64_t batch_size) const;
  // Gate statistics of the last forward, one object per compute-aware layer.
  nlohmann::json layer_stats() const;
  // Means over the epoch of what objective() saw.
  nlohmann::json epoch_summary() const;
  double dense_flops_per_example() const { return breakdown_.dense_flops; }
  // After the model's shapes changed (structured pruning): recomputes its fixed FLOPs; the dense normaliser stays
  // that of the model as built, so λ keeps its meaning.
  void refresh_static_flops() { breakdown_.static_flops = compute_breakdown(model_).static_flops; }
  // The epoch and this epoch's sums in a resume checkpoint; load() sets the mixers for that epoch as
  // begin_epoch() did, then restores the sums.
  void save(torch::serialize::OutputArchive& ar) const;
  void load(torch::serialize::InputArchive& ar);

 private:
  Model& model_;
  ComputeSchedule schedule_;
  ComputeBreakdown breakdown_;
  mutable std::vector<double> dense_at_;  // dense_flops_at by length, filled on first use
  bool adaptive_ = false;
  double lambda_ = 0;
  int64_t epoch_ = 0;
  double position_ = 0;
  void apply(double position);  // dense mode, temperature and λ at this position
  double sum_cost_ = 0, sum_aux_ = 0;
  int64_t steps_ = 0;
};

}  // namespace cerebra
