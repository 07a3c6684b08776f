// Experiment commands of the `cerebra` CLI:
//   cerebra sweep --config FILE --grid "lambda=0,1e-3" [--grid ...] --seeds 3 --out DIR [--key value ...]
//   cerebra reproduce table1 [--quick] [--seeds N] [--out DIR] [--threads N] [--set KEY=VALUE ...]
//   cerebra report DIR      (Markdown report of a sweep, table1, bench tasks or bench layers directory)
//   cerebra plot DIR        (draw or redraw the plots of such a directory)
// See include/cerebra/experiments.h for what the directories hold.
#pragma once

#include <functional>
#include <string>

namespace CLI {
class App;
}

namespace cerebra {

struct ExperimentCommands {
  std::function<bool()> selected;  // true after parsing when one of the commands was given
  std::function<int()> run;        // runs it; returns the exit code (errors are thrown)
};

// Adds sweep, reproduce, report and plot to `app`. `source_dir` locates configs/table1/rows.yaml when neither
// $CEREBRA_HOME nor the working directory has it.
ExperimentCommands add_experiment_commands(CLI::App* app, const std::string& source_dir);

}  // namespace cerebra
