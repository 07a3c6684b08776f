#include "cerebra/cli/cli_config.h"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <sys/wait.h>

#include "cerebra/data/seq_tasks.h"

namespace fs = std::filesystem;

namespace cerebra {

void add_config_options(CLI::App* app, ConfigArgs& args, const std::string& group_suffix,
                        const std::set<std::string>& file_only) {
  app->add_option("--config", args.files,
                  "YAML config file(s), applied in order; a file may start from another with `base: FILE`")
      ->check(CLI::ExistingFile);
  for (const auto& k : Config::schema()) {
    if (file_only.count(k.name)) continue;
    std::string help = k.help;
    if (!k.choices.empty()) {
      std::string c;
      for (const auto& ch : k.choices)
        if (!ch.empty()) c += (c.empty() ? "" : "|") + ch;
      help += " [" + c + "]";
    }
    auto* opt = app->add_option("--" + k.name, args.values[k.name], help)
                    ->default_str(k.default_value.empty() ? "\"\"" : k.default_value)
                    ->group("Config keys (" + k.group + ")" + group_suffix);
    args.options[k.name] = opt;
  }
  app->allow_extras();
}

Config build_config(const CLI::App* app, const ConfigArgs& args, std::string* command, const std::string& base_file) {
  // Anything CLI11 did not recognise is an unknown key or a stray argument.
  for (const auto& extra : app->remaining()) {
    if (extra.rfind("--", 0) == 0) {
      std::string key = extra.substr(2);
      throw ConfigError("command line: " + describe_unknown_key(key.substr(0, key.find('='))));
    }
    throw ConfigError("command line: unexpected argument '" + extra + "'");
  }
  Config config;
  if (!base_file.empty()) config.load_yaml_file(base_file);
  for (const auto& f : args.files) {
    config.load_yaml_file(f);
    if (command) *command += " --config " + f;
  }
  for (const auto& [key, opt] : args.options)
    if (opt->count() > 0) {
      config.set(key, args.values.at(key), "command line --" + key);
      if (command) *command += " --" + key + " " + args.values.at(key);
    }
  return config;
}

namespace {

std::string find_script(const std::string& name, const std::string& source_dir) {
  std::vector<fs::path> candidates;
  if (const char* home = std::getenv("CEREBRA_HOME")) candidates.emplace_back(fs::path(home) / "scripts" / name);
  if (!source_dir.empty()) candidates.emplace_back(fs::path(source_dir) / "scripts" / name);
  candidates.emplace_back(fs::path("scripts") / name);
  for (const auto& c : candidates)
    if (fs::exists(c)) return c.string();
  throw std::runtime_error("cannot find scripts/" + name + " (set CEREBRA_HOME to the Cerebra source directory)");
}

}  // namespace

int run_data_export(const std::string& out_dir, bool force, const std::string& source_dir) {
  std::string cmd = "bash '" + find_script("export_data.sh", source_dir) + "' --out '" + out_dir + "'" +
                    (force ? " --force" : "");
  std::cerr << "cerebra data: " << cmd << "\n";
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 1;
}

void ensure_data(const TaskSpec& spec, const std::string& source_dir) {
  const std::string& task = spec.name;
  if (task == "csv" || !spec.data.empty()) return;
  if (is_seq_task(task) && task != "janeausten") return;  // generated, or read from wordnet_dir
  const std::string path = spec.data_dir + "/" + task + (task == "janeausten" ? ".txt" : ".csv");
  if (fs::exists(path)) return;
  std::cerr << "cerebra: " << path << " is missing; exporting the data sets first\n";
  if (run_data_export(spec.data_dir, false, source_dir) != 0)
    throw std::runtime_error("data export failed; see the messages above (scripts/export_data.sh)");
}

}  // namespace cerebra
