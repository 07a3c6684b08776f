// Structured pruning: groups of a model, Taylor scores per FLOP, the gradual schedule and the prune state.
// Design: include/cerebra/pruning.h.
#include "cerebra/models/pruning.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <tuple>
#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/core/io.h"
#include "cerebra/core/state_archive.h"
#include "cerebra/models/quant.h"

namespace cerebra {

// ---- helpers

torch::Tensor index_tensor(const std::vector<int64_t>& idx) { return torch::tensor(idx, torch::kInt64); }

torch::Tensor unit_columns(const std::vector<int64_t>& units, int64_t width, int64_t offset) {
  std::vector<int64_t> cols;
  cols.reserve(units.size() * static_cast<size_t>(width));
  for (auto u : units)
    for (int64_t t = 0; t < width; ++t) cols.push_back(offset + u * width + t);
  return index_tensor(cols);
}

torch::nn::Linear select_linear(const torch::nn::Linear& src, const torch::Tensor& out_idx, const torch::Tensor& in_idx) {
  torch::NoGradGuard g;
  auto w = src->weight.detach();
  if (out_idx.defined()) w = w.index_select(0, out_idx.to(w.device()));
  if (in_idx.defined()) w = w.index_select(1, in_idx.to(w.device()));
  const bool has_bias = src->bias.defined();
  torch::nn::Linear dst(torch::nn::LinearOptions(w.size(1), w.size(0)).bias(has_bias));
  dst->to(w.device(), w.scalar_type());
  dst->weight.copy_(w);
  if (has_bias) {
    auto b = src->bias.detach();
    dst->bias.copy_(out_idx.defined() ? b.index_select(0, out_idx.to(b.device())) : b);
  }
  dst->train(src->is_training());
  inherit_range_buffer(*src, *dst);  // QAT models keep their range buffers (fresh: unobserved)
  return dst;
}

torch::Tensor grad_times_weight(const torch::Tensor& p) {
  const auto& g = p.grad();
  if (!g.defined()) return torch::zeros_like(p).detach();
  return (g * p).detach();
}

// ---- schedule


double PruneSchedule::fraction_after(int64_t epoch) const {
  if (!enabled() || epoch < start_epoch) return 0.0;
  const double p = static_cast<double>(epoch - start_epoch + 1) / static_cast<double>(epochs);
  return target * std::min(1.0, p);
}

// ---- groups of a model

std::vector<ModelPruneGroup> model_prune_groups(Model& model) {
  std::vector<ModelPruneGroup> out;
  BackboneImpl* bb = model.backbone();
  if (!bb) return out;
  const int64_t n = model.tokens_per_example();
  for (int64_t l = 0; l < bb->n_layers(); ++l) {
    const std::string layer = "layer" + std::to_string(l);
    auto groups = bb->mixers()[static_cast<size_t>(l)]->prunable_groups(n);
    for (size_t g = 0; g < groups.size(); ++g)
      out.push_back({groups[g].kind, layer + "." + groups[g].name, l, static_cast<int64_t>(g), groups[g].units,
                     groups[g].unit_flops});
    if (bb->ffn_units(l) > 0) out.push_back({"ffn", layer + ".ffn", l, -1, bb->ffn_units(l), bb->ffn_unit_flops(n)});
  }
  return out;
}

torch::Tensor group_taylor(Model& model, const ModelPruneGroup& g) {
  BackboneImpl* bb = model.backbone();
  TORCH_CHECK(bb, "pruning: the model has no backbone");
  if (g.mixer_group < 0) return bb->ffn_taylor(g.layer);
  return bb->mixers()[static_cast<size_t>(g.layer)]->unit_taylor(static_cast<size_t>(g.mixer_group));
}

namespace {
void check_keep(const ModelPruneGroup& g, const std::vector<int64_t>& keep) {
  TORCH_CHECK(!keep.empty(), "pruning ", g.key, ": at least one unit must be kept");
  for (size_t i = 0; i < keep.size(); ++i)
    TORCH_CHECK(keep[i] >= 0 && keep[i] < g.units && (i == 0 || keep[i] > keep[i - 1]), "pruning ", g.key,
                ": kept units must be ascending indices in [0, ", g.units, ")");
}
}  // namespace

void prune_group(Model& model, const ModelPruneGroup& g, const std::vector<int64_t>& keep) {
  check_keep(g, keep);
  BackboneImpl* bb = model.backbone();
  if (g.mixer_group < 0)
    bb->prune_ffn(g.layer, keep);
  else
    bb->mixers()[static_cast<size_t>(g.layer)]->prune_units(static_cast<size_t>(g.mixer_group), keep);
}

void mask_group(Model& model, const ModelPruneGroup& g, const std::vector<int64_t>& keep) {
  check_keep(g, keep);
  BackboneImpl* bb = model.backbone();
  if (g.mixer_group < 0)
    bb->mask_ffn(g.layer, keep);
  else
    bb->mixers()[static_cast<size_t>(g.layer)]->mask_units(static_cast<size_t>(g.mixer_group), keep);
}

nlohmann::json prune_state(Model& model) {
  nlohmann::json s = nlohmann::json::object();
  for (const auto& g : model_prune_groups(model)) s[g.key] = g.units;
  return s;
}

void apply_prune_state(Model& model, const nlohmann::json& state, const std::string& origin) {
  if (!state.is_object()) throw std::runtime_error(origin + ": expected an object of group -> kept units");
  auto groups = model_prune_groups(model);
  for (auto& [key, value] : state.items()) {
    auto it = std::find_if(groups.begin(), groups.end(), [&k = key](const ModelPruneGroup& g) { return g.key == k; });
    if (it == groups.end()) throw std::runtime_error(origin + ": group '" + key + "' does not exist in this model");
    if (!value.is_number_integer())
      throw std::runtime_error(origin + ": group '" + key + "' must hold an integer count of kept units");
    const int64_t k = value.get<int64_t>();
    if (k < 1 || k > it->units)
      throw std::runtime_error(origin + ": group '" + key + "' keeps " + std::to_string(k) + " units; expected 1.." +
                               std::to_string(it->units));
    if (k == it->units) continue;
    std::vector<int64_t> keep(static_cast<size_t>(k));
    std::iota(keep.begin(), keep.end(), 0);
    prune_group(model, *it, keep);
  }
}

std::vector<std::vector<int64_t>> select_keep(const std::vector<std::vector<double>>& scores, int64_t remove) {
  std::vector<std::tuple<double, size_t, int64_t>> all;
  for (size_t g = 0; g < scores.size(); ++g)
    for (size_t j = 0; j < scores[g].size(); ++j) all.emplace_back(scores[g][j], g, static_cast<int64_t>(j));
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  std::vector<std::vector<bool>> drop(scores.size());
  std::vector<int64_t> left(scores.size());
  for (size_t g = 0; g < scores.size(); ++g) {
    drop[g].assign(scores[g].size(), false);
    left[g] = static_cast<int64_t>(scores[g].size());
  }
  for (const auto& [s, g, j] : all) {
    if (remove <= 0) break;
    if (left[g] <= 1) continue;
    drop[g][static_cast<size_t>(j)] = true;
    --left[g];
    --remove;
  }
  std::vector<std::vector<int64_t>> keep(scores.size());
  for (size_t g = 0; g < scores.size(); ++g)
    for (size_t j = 0; j < scores[g].size(); ++j)
      if (!drop[g][j]) keep[g].push_back(static_cast<int64_t>(j));
  return keep;
}

// ---- the schedule in training

Pruner::Pruner(Model& model, const PruneSchedule& schedule) : model_(model), schedule_(schedule) {
  for (const auto& g : model_prune_groups(model)) original_[g.kind] += g.units;
  for (const auto& k : schedule_.kinds)
    if (!original_.count(k))
      throw ConfigError("prune_kinds: this model has no '" + k + "' to prune (it has: " + [&] {
        std::string s;
        for (const auto& [kind, u] : original_) s += (s.empty() ? "" : ", ") + kind;
        return s.empty() ? std::string("nothing prunable") : s;
      }() + ")");
}

void Pruner::accumulate(int64_t epoch) {
  if (!schedule_.active(epoch)) return;
  torch::NoGradGuard ng;
  for (const auto& g : model_prune_groups(model_)) {
    if (std::find(schedule_.kinds.begin(), schedule_.kinds.end(), g.kind) == schedule_.kinds.end()) continue;
    auto t = group_taylor(model_, g).abs().to(torch::kDouble);
    auto& a = acc_[g.key];
    a = a.defined() ? a + t : t;
  }
  ++batches_;
}

bool Pruner::end_epoch(int64_t epoch) {
  if (!schedule_.active(epoch)) return false;
  const double frac = schedule_.fraction_after(epoch);
  bool changed = false;
  last_step_ = nlohmann::json::object();
  for (const auto& kind : schedule_.kinds) {
    std::vector<ModelPruneGroup> groups;
    for (const auto& g : model_prune_groups(model_))
      if (g.kind == kind) groups.push_back(g);
    int64_t now = 0;
    for (const auto& g : groups) now += g.units;
    const int64_t want_removed = static_cast<int64_t>(std::floor(frac * static_cast<double>(original_[kind]) + 1e-9));
    const int64_t remove = want_removed - (original_[kind] - now);
    if (remove <= 0) continue;
    std::vector<std::vector<double>> scores;
    for (const auto& g : groups) {
      auto it = acc_.find(g.key);
      std::vector<double> s(static_cast<size_t>(g.units), 0.0);
      if (it != acc_.end() && batches_ > 0) {
        auto a = (it->second / static_cast<double>(batches_)).contiguous();
        for (int64_t j = 0; j < g.units; ++j) s[static_cast<size_t>(j)] = a[j].item<double>() / g.unit_flops;
      }
      scores.push_back(std::move(s));
    }
    auto keep = select_keep(scores, remove);
    int64_t removed = 0;
    for (size_t i = 0; i < groups.size(); ++i) {
      if (static_cast<int64_t>(keep[i].size()) == groups[i].units) continue;
      removed += groups[i].units - static_cast<int64_t>(keep[i].size());
      prune_group(model_, groups[i], keep[i]);
      changed = true;
    }
    last_step_[kind] = removed;
  }
  acc_.clear();
  batches_ = 0;
  return changed;
}

nlohmann::json Pruner::report() const {
  nlohmann::json kept = nlohmann::json::object(), orig = nlohmann::json::object();
  std::map<std::string, int64_t> now;
  for (const auto& g : model_prune_groups(model_)) now[g.kind] += g.units;
  for (const auto& [k, u] : original_) {
    kept[k] = now[k];
    orig[k] = u;
  }
  return {{"prune_kept", kept}, {"prune_original", orig}, {"prune_removed_this_epoch", last_step_},
          {"params", model_.parameter_count()}, {"analytic_flops_per_example", model_.flops_per_example()}};
}

void Pruner::save(torch::serialize::OutputArchive& ar) const {
  write_json(ar, "original", original_);
  write_json(ar, "shapes", prune_state(model_));
  std::vector<std::pair<std::string, torch::Tensor>> acc(acc_.begin(), acc_.end());
  write_tensors(ar, "saliency", acc);
  write_int(ar, "batches", batches_);
  write_json(ar, "last_step", last_step_);
}

bool Pruner::load(torch::serialize::InputArchive& ar) {
  const nlohmann::json before = prune_state(model_);
  apply_prune_state(model_, read_json(ar, "shapes"), "checkpoint pruner state");
  const nlohmann::json original = read_json(ar, "original");
  if (!original.is_object()) throw std::runtime_error("checkpoint pruner state: 'original' is not an object");
  original_.clear();
  for (const auto& [kind, units] : original.items()) {
    if (!units.is_number_integer())
      throw std::runtime_error("checkpoint pruner state: 'original' holds a count that is not an integer");
    original_[kind] = units.get<int64_t>();
  }
  acc_.clear();
  for (auto& [key, t] : read_tensors(ar, "saliency")) acc_[key] = t;
  batches_ = read_int(ar, "batches");
  last_step_ = read_json(ar, "last_step");
  return prune_state(model_) != before;
}

void load_prune_state(Model& model, const std::string& run_dir) {
  const std::filesystem::path path = std::filesystem::path(run_dir) / kPruneStateFile;
  if (std::filesystem::exists(path)) apply_prune_state(model, read_json_file(path), path.string());
}

bool save_prune_state(Model& model, Model& unpruned, const std::string& path) {
  const nlohmann::json state = prune_state(model);
  bool pruned = false;
  for (const auto& g : model_prune_groups(unpruned))
    if (state.contains(g.key) && state[g.key].get<int64_t>() != g.units) pruned = true;
  if (pruned) write_text_file_atomic(path, state.dump(2) + "\n");
  return pruned;
}

}  // namespace cerebra
