#include "cerebra/train/compute_objective.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "cerebra/core/state_archive.h"
#include "cerebra/models/cerebra_causal.h"
#include "cerebra/models/cerebra_layer.h"

namespace cerebra {

namespace {
// Progress through the ramp in [0, 1] at a position (epochs completed): 0 where the warm-up ends.
double ramp_progress(const ComputeSchedule& s, double position) {
  if (s.ramp_epochs <= 0) return 1.0;
  return std::clamp((position - s.warm_epochs) / s.ramp_epochs, 0.0, 1.0);
}

// FLOPs of one example of n tokens through `m` as dense softmax attention (with the block's feed-forward when a
// Cerebra layer routes it); other mixers as they are.
double dense_mixer_flops(const std::shared_ptr<SequenceMixer>& m, int64_t n) {
  if (auto layer = std::dynamic_pointer_cast<CerebraLayer>(m))
    return dense_attention_flops(n, layer->options().d_model) +
           (layer->owns_feedforward() ? static_cast<double>(n) * layer->options().ffn_token_flops : 0.0);
  if (auto causal = std::dynamic_pointer_cast<CausalCerebraLayer>(m))
    return dense_attention_flops(n, causal->options().d_model);
  return m->flops(n);
}

// A Cerebra layer, causal or not: a compute-aware mixer with gates, statistics and an auxiliary loss.
bool is_cerebra(const std::shared_ptr<SequenceMixer>& m) {
  return std::dynamic_pointer_cast<CerebraLayer>(m) || std::dynamic_pointer_cast<CausalCerebraLayer>(m);
}
}  // namespace

double ComputeSchedule::lambda(double position) const {
  if (dense(position)) return 0.0;
  return lambda0 + (lambda_target - lambda0) * ramp_progress(*this, position);
}

double ComputeSchedule::temperature(double position) const {
  return tau * std::pow(tau_min / tau, ramp_progress(*this, position));
}

double ComputeSchedule::exploration(double position) const { return 1.0 - ramp_progress(*this, position); }

bool ComputeSchedule::per_step() const {
  return warm_epochs != std::floor(warm_epochs) || ramp_epochs != std::floor(ramp_epochs);
}

int64_t ComputeSchedule::first_epoch_after_ramp() const {
  return static_cast<int64_t>(std::ceil(warm_epochs + ramp_epochs)) + 1;
}

ComputeBreakdown compute_breakdown(const Model& model) {
  ComputeBreakdown b;
  const int64_t n = model.tokens_per_example();
  double mixers = 0, dense = 0;
  for (const auto& m : model.mixers()) {
    mixers += m->flops(n);
    dense += dense_mixer_flops(m, n);
  }
  b.static_flops = model.flops_per_example() - mixers;
  b.dense_flops = b.static_flops + dense;
  return b;
}

ComputeObjective::ComputeObjective(Model& model, const ComputeSchedule& schedule)
    : model_(model), schedule_(schedule), breakdown_(compute_breakdown(model)) {
  for (const auto& m : model.mixers())
    if (is_cerebra(m)) adaptive_ = true;
  // A backbone with moe feed-forwards has a load-balancing loss for objective() to add: active for that too.
  if (BackboneImpl* bb = model.backbone(); bb && bb->has_moe()) adaptive_ = true;
}

void ComputeObjective::apply(double position) {
  position_ = position;
  lambda_ = schedule_.lambda(position);
  for (const auto& m : model_.mixers()) {
    m->set_dense(schedule_.dense(position));
    m->set_temperature(schedule_.temperature(position));
    m->set_exploration(schedule_.exploration(position));
  }
}

void ComputeObjective::begin_epoch(int64_t epoch) {
  epoch_ = epoch;
  sum_cost_ = sum_aux_ = 0;
  steps_ = 0;
  apply(static_cast<double>(epoch - 1));
}

void ComputeObjective::begin_step(double position) {
  if (schedule_.per_step()) apply(position);
}

double ComputeObjective::dense_flops_at(int64_t length) const {
  const int64_t n = model_.tokens_per_example();
  if (n <= 0 || length >= n) return breakdown_.dense_flops;
  length = std::max<int64_t>(length, 1);
  if (dense_at_.empty()) dense_at_.assign(static_cast<size_t>(n), -1.0);
  double& f = dense_at_[static_cast<size_t>(length)];
  if (f >= 0) return f;
  // The fixed parts scale with the tokens (their per-example head is a small share); the mixers at this length.
  f = breakdown_.static_flops * static_cast<double>(length) / static_cast<double>(n);
  for (const auto& m : model_.mixers()) f += dense_mixer_flops(m, length);
  return f;
}

double ComputeObjective::dense_flops_of(const torch::Tensor& mask) const {
  const auto lengths = mask.sum(1).to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* len = lengths.data_ptr<int64_t>();
  const int64_t B = lengths.size(0);
  double d = 0;
  for (int64_t b = 0; b < B; ++b) d += dense_flops_at(len[b]);
  return B > 0 ? d / static_cast<double>(B) : breakdown_.dense_flops;
}

torch::Tensor ComputeObjective::objective(const torch::Tensor& task_loss, int64_t batch_size,
                                          const torch::Tensor& mask) {
  torch::Tensor j = task_loss;
  torch::Tensor expected;  // Σ over compute-aware layers of expected FLOPs, summed over the batch
  for (const auto& m : model_.mixers()) {
    torch::Tensor aux = m->aux_loss();
    if (aux.defined()) {
      j = j + aux;
      sum_aux_ += aux.item<double>();
    }
    torch::Tensor e = m->expected_flops();
    if (e.defined()) expected = expected.defined() ? expected + e : e;
  }
  if (BackboneImpl* bb = model_.backbone()) {  // the feed-forward blocks' auxiliary loss (moe load balancing)
    torch::Tensor aux = bb->aux_loss();
    if (aux.defined()) {
      j = j + aux.to(task_loss.scalar_type());
      sum_aux_ += aux.item<double>();
    }
  }
  if (expected.defined()) {
    // C = (fixed FLOPs + expected mixer FLOPs) per example / dense FLOPs per example; only the gates carry gradient.
    // A padded batch: both at the real lengths (the fixed parts run on real tokens only in proportion).
    double fixed = breakdown_.static_flops, dense = breakdown_.dense_flops;
    if (mask.defined() && mask.dim() == 2 && mask.size(0) > 0 && model_.tokens_per_example() > 0) {
      const double real = mask.sum().item<double>();
      fixed *= real / (static_cast<double>(model_.tokens_per_example()) * static_cast<double>(mask.size(0)));
      dense = dense_flops_of(mask);
    }
    auto cost = (expected.to(torch::kFloat64) / static_cast<double>(batch_size) + fixed) / dense;
    sum_cost_ += cost.item<double>();
    if (lambda_ > 0) j = j + lambda_ * cost.to(task_loss.scalar_type());
  }
  ++steps_;
  return j;
}

double ComputeObjective::realised_per_example(int64_t batch_size) const {
  const int64_t n = model_.tokens_per_example();
  double f = breakdown_.static_flops;
  for (const auto& m : model_.mixers()) {
    const double r = m->realised_flops();
    f += r < 0 ? m->flops(n) : r / static_cast<double>(batch_size);
  }
  if (const BackboneImpl* bb = model_.backbone())  // moe assignments over capacity did not run
    f -= bb->moe_dropped_flops() / static_cast<double>(batch_size);
  return f;
}

std::vector<double> ComputeObjective::realised_relative_per_example(int64_t batch_size) const {
  const int64_t n = model_.tokens_per_example();
  std::vector<double> f(static_cast<size_t>(batch_size), breakdown_.static_flops);
  for (const auto& m : model_.mixers()) {
    const std::vector<double> per = m->realised_flops_per_sequence();
    for (size_t b = 0; b < f.size(); ++b) f[b] += per.size() == f.size() ? per[b] : m->flops(n);
  }
  if (const BackboneImpl* bb = model_.backbone()) {
    const double dropped = bb->moe_dropped_flops() / static_cast<double>(batch_size);
    for (double& v : f) v -= dropped;
  }
  for (double& v : f) v /= breakdown_.dense_flops;
  return f;
}

double ComputeObjective::expected_per_example(int64_t batch_size) const {
  const int64_t n = model_.tokens_per_example();
  double f = breakdown_.static_flops;
  for (const auto& m : model_.mixers()) {
    torch::Tensor e = m->expected_flops();
    f += e.defined() ? e.item<double>() / static_cast<double>(batch_size) : m->flops(n);
  }
  return f;
}

nlohmann::json ComputeObjective::layer_stats() const {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& m : model_.mixers())
    if (is_cerebra(m)) layers.push_back(m->stats());
  return layers;
}

nlohmann::json ComputeObjective::epoch_summary() const {
  const double steps = static_cast<double>(std::max<int64_t>(1, steps_));
  return {{"lambda", lambda_},
          {"tau", schedule_.temperature(position_)},
          {"dense", schedule_.dense(position_)},
          {"train_expected_cost", sum_cost_ / steps},
          {"train_aux_loss", sum_aux_ / steps}};
}

void ComputeObjective::save(torch::serialize::OutputArchive& ar) const {
  write_int(ar, "epoch", epoch_);
  write_double(ar, "sum_cost", sum_cost_);
  write_double(ar, "sum_aux", sum_aux_);
  write_int(ar, "steps", steps_);
}

void ComputeObjective::load(torch::serialize::InputArchive& ar) {
  const int64_t epoch = read_int(ar, "epoch");
  if (epoch > 0) begin_epoch(epoch);
  sum_cost_ = read_double(ar, "sum_cost");
  sum_aux_ = read_double(ar, "sum_aux");
  steps_ = read_int(ar, "steps");
}

}  // namespace cerebra
