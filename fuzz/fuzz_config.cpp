// libFuzzer target: a YAML config file through Config::load_yaml_file (the schema's keys and types, `base:`
// chains), the resolved config's round trip through to_yaml, and the typed run spec (parse_run_spec) for training
// and for loading. Malformed input must end in ConfigError; anything else escaping is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cerebra/core/config.h"
#include "cerebra/train/spec.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string path = cerebra_fuzz::write_file("config.yaml", text);
  cerebra::Config config;
  try {
    config.load_yaml_file(path);
  } catch (const cerebra::ConfigError&) {
    return 0;
  }
  // What a run writes as its config.yaml loads back to the same values.
  cerebra::Config back;
  back.load_yaml_file(cerebra_fuzz::write_file("resolved.yaml", config.to_yaml()));
  if (!config.differences(back).empty()) std::abort();
  config.to_json();
  for (bool training : {true, false}) {
    try {
      cerebra::parse_run_spec(config, training);
    } catch (const cerebra::ConfigError&) {
    }
  }
  return 0;
}
