// A run's typed specification: the config parsed once, at the top, into one struct per part (task, model,
// trainer, compute schedule, pruning, quantisation, runtime). Every check that needs no data is made here, so a
// bad key or value is reported before any data is exported or loaded. Nothing below the command line reads the
// config by key: layers receive these structs.
#pragma once

#include <string>

#include "cerebra/core/config.h"
#include "cerebra/core/runtime.h"
#include "cerebra/data/task_spec.h"
#include "cerebra/models/models.h"
#include "cerebra/models/pruning.h"
#include "cerebra/models/quant.h"
#include "cerebra/train/compute_objective.h"
#include "cerebra/train/train.h"

namespace cerebra {

struct RunSpec {
  Config config;  // the resolved config it was parsed from (written to config.yaml)
  TaskSpec task;
  ModelSpec model;
  TrainerOptions trainer;     // includes the sampler
  ComputeSchedule compute;    // λ and temperature schedule of compute-aware models
  PruneSchedule prune;
  QuantSpec quant;
  RuntimeSpec runtime;

  // runs/<task>-<model>-s<seed>
  std::string default_run_dir() const;
};

// Parses and checks a config. `training` = false for a run being reloaded (an int8 export is then allowed).
// Throws ConfigError naming the key.
RunSpec parse_run_spec(const Config& config, bool training = true);

}  // namespace cerebra
