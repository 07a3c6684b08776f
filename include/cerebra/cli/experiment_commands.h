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

class Commands;

// Adds sweep, reproduce, report and plot to `app` (include/cerebra/cli/command.h). `source_dir` locates
// configs/table1/rows.yaml when neither $CEREBRA_HOME nor the working directory has it.
void add_experiment_commands(CLI::App* app, const std::string& source_dir, Commands& commands);

}  // namespace cerebra
