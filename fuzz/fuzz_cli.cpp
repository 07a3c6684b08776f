// libFuzzer target: command-line overrides. The input is an argument list, one argument per line, parsed as
// `cerebra train` parses its config options (add_config_options, build_config), then typed (parse_run_spec).
// Malformed input must end in a CLI11 parse error or ConfigError.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cerebra/cli/cli_config.h"
#include "cerebra/train/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> argv;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = text.find('\n', begin);
    argv.push_back(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  if (argv.size() > 64) return 0;  // each argument may name a key; more only repeats them
  // One parser for every input (as a process parses once); clear() forgets the previous parse.
  static cerebra::ConfigArgs args;
  static CLI::App& app = *[] {
    auto* a = new CLI::App{"train"};
    cerebra::add_config_options(a, args);
    return a;
  }();
  app.clear();
  args.files.clear();
  try {
    std::vector<std::string> reversed(argv.rbegin(), argv.rend());  // CLI11 takes them last first
    app.parse(reversed);
    const cerebra::Config config = cerebra::build_config(&app, args, nullptr);
    cerebra::parse_run_spec(config, true);
  } catch (const CLI::Error&) {
  } catch (const cerebra::ConfigError&) {
  }
  return 0;
}
