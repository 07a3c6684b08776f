#include "cerebra/train/recipe.h"

#include <algorithm>
#include <nlohmann/json.hpp>

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
  hooks.first_selectable_epoch = std::max(hooks.first_selectable_epoch, start);
}

}  // namespace cerebra
