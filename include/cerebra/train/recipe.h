// The recipe's training-time parts that wrap the trainer's hooks (include/cerebra/train/train.h): structured
// pruning and quantisation-aware training, from their parsed specs.
#pragma once

#include <functional>
#include <memory>

#include "cerebra/models/pruning.h"
#include "cerebra/models/quant.h"
#include "cerebra/train/train.h"

namespace cerebra {

// Structured pruning in a training loop (returns null and changes nothing when the schedule is off): saliencies
// after each backward pass, a pruning step at the end of each scheduled epoch (then `on_change`, e.g. to refresh
// static FLOPs), the pruner's report in the metrics lines, and best-epoch selection held back until the last
// pruning step (earlier snapshots would not fit the shapes). `epochs` is the length of the run. The returned pruner
// must outlive training.
std::unique_ptr<Pruner> attach_pruning(TrainerHooks& hooks, Model& model, const PruneSchedule& schedule,
                                       int64_t epochs, std::function<void()> on_change = {});

// QAT during training: registers the ranges now, switches fake quantisation on from qat_start_epoch (re-applied
// at every epoch start, so replaced modules are covered), adds {"qat": bool} to the metrics lines and keeps the
// epochs before qat_start_epoch out of best-epoch selection. Wraps any hooks already set. No-op when qat is off.
void attach_qat(TrainerHooks& hooks, Model& model, const QuantSpec& spec);

}  // namespace cerebra
