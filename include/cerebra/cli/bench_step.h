// `cerebra bench step`: the time of one full training step of a model built exactly as `cerebra train` builds it
// (same config parse, make_model, the task's loss, AdamW with the config's lr and weight decay, gradient clipping),
// split into forward (with the loss), backward and optimizer (finite-gradient check, clipping, AdamW step,
// zero_grad), with the measured FLOPs of the step. scripts/compare_pytorch.py times the same step in PyTorch eager
// from what this command writes (--json, --export).
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace cerebra {

class Commands;

// Adds the `step` subcommand under `bench` (include/cerebra/cli/command.h). `source_dir` locates
// scripts/export_data.sh when the task's data must be exported first.
CLI::App* add_bench_step_command(CLI::App* bench, const std::string& source_dir, Commands& commands);

}  // namespace cerebra
