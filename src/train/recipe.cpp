#include "cerebra/train/recipe.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cerebra/core/state_archive.h"

namespace cerebra {

std::unique_ptr<Pruner> attach_pruning(TrainerHooks& hooks, Model& model, const PruneSchedule& schedule,
                                       int64_t epochs, std::function<void()> on_change) {
  if (!schedule.enabled()) return nullptr;
  auto pruner = std::make_unique<Pruner>(model, schedule);
  Pruner* p = pruner.get();
  hooks.after_backward = [p](int64_t epoch) { p->accumulate(epoch); };
  hooks.on_epoch_end = [p, on_change](int64_t epoch) {
    const bool changed = p->end_epoch(epoch);
    if (changed && on_change) on_change();
    return changed;
  };
  auto previous = hooks.epoch_report;
  hooks.epoch_report = [p, previous]() {
    nlohmann::json r = previous ? previous() : nlohmann::json::object();
    r.update(p->report());
    return r;
  };
  // Checkpoints: the pruner's state is restored first, so the model has its pruned shapes before anything else.
  auto prev_save = hooks.save_state;
  hooks.save_state = [p, prev_save](torch::serialize::OutputArchive& ar) {
    if (prev_save) prev_save(ar);
    torch::serialize::OutputArchive sub;
    p->save(sub);
    ar.write("pruner", sub);
  };
  auto prev_load = hooks.load_state;
  hooks.load_state = [p, prev_load, on_change](torch::serialize::InputArchive& ar) {
    torch::serialize::InputArchive sub;
    ar.read("pruner", sub);
    if (p->load(sub) && on_change) on_change();
    if (prev_load) prev_load(ar);
  };
  hooks.first_selectable_epoch = std::min<int64_t>(std::max(hooks.first_selectable_epoch, schedule.last_epoch()), epochs);
  return pruner;
}

void attach_qat(TrainerHooks& hooks, Model& model, const QuantSpec& spec) {
  if (!spec.qat) return;
  prepare_qat(model);
  const QuantOptions options = spec.options();
  const int64_t start = spec.qat_start_epoch;
  auto active = std::make_shared<bool>(false);
  auto prev_begin = hooks.on_epoch_begin;
  hooks.on_epoch_begin = [prev_begin, &model, options, start, active](int64_t epoch) {
    if (prev_begin) prev_begin(epoch);
    *active = epoch >= start;
    set_quant_mode(model, *active ? QuantMode::kFakeQuant : QuantMode::kFloat, options);
  };
  auto prev_report = hooks.epoch_report;
  hooks.epoch_report = [prev_report, active]() {
    nlohmann::json r = prev_report ? prev_report() : nlohmann::json::object();
    r["qat"] = *active;
    return r;
  };
  // Checkpoints: whether fake quantisation is on; restoring switches the model's Linears to that mode (after the
  // pruner, if any, has given the model its shapes). The tracked ranges are buffers, in the weights.
  auto prev_save = hooks.save_state;
  hooks.save_state = [prev_save, active](torch::serialize::OutputArchive& ar) {
    if (prev_save) prev_save(ar);
    write_int(ar, "qat_active", *active ? 1 : 0);
  };
  auto prev_load = hooks.load_state;
  hooks.load_state = [prev_load, &model, options, active](torch::serialize::InputArchive& ar) {
    if (prev_load) prev_load(ar);
    prepare_qat(model);
    *active = read_int(ar, "qat_active") != 0;
    set_quant_mode(model, *active ? QuantMode::kFakeQuant : QuantMode::kFloat, options);
  };
  hooks.first_selectable_epoch = std::max(hooks.first_selectable_epoch, start);
}

}  // namespace cerebra
