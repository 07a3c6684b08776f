// Command-line plumbing shared by the subcommands that take a run configuration (train, bench tasks, sweep):
// `--config FILE...` plus one `--key value` option per config key, and the data export run on first use.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "cerebra/core/config.h"
#include "cerebra/data/task_spec.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace cerebra {

struct ConfigArgs {
  std::vector<std::string> files;
  std::map<std::string, std::string> values;
  std::map<std::string, CLI::Option*> options;
};

// Adds --config and one option per schema key, grouped as "Config keys (<group>)<group_suffix>" in --help. Keys in
// `file_only` get no option (a command whose own option has that name); config files still set them.
void add_config_options(CLI::App* app, ConfigArgs& args, const std::string& group_suffix = "",
                        const std::set<std::string>& file_only = {});
// The config from `base_file` (if given), the --config files, then the command-line values. Unknown `--keys` and
// stray arguments are rejected with "did you mean". If `command` is given, the config part of the command line is
// appended to it (for records).
Config build_config(const CLI::App* app, const ConfigArgs& args, std::string* command = nullptr,
                    const std::string& base_file = "");

// Runs scripts/export_data.sh (found via $CEREBRA_HOME, `source_dir` or ./scripts) into `out_dir`; its exit code.
int run_data_export(const std::string& out_dir, bool force, const std::string& source_dir);
// Exports the data sets when the configured task's file is missing (generated tasks need none).
void ensure_data(const TaskSpec& spec, const std::string& source_dir);

}  // namespace cerebra
