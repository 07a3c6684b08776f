// Shared helpers for the test binary.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "cerebra/core/config.h"

namespace cerebra {
class Model;
}

namespace cerebra::test {

// The checkout's file `rel` (tests/test_paths.cpp).
std::string source_path(const std::string& rel);
// The `cerebra` executable built with these tests.
std::string cerebra_binary();
// The config's changed keys as command-line overrides: --key value ...
inline std::vector<std::string> config_args(const Config& c) {
  std::vector<std::string> args;
  for (const auto& [k, v] : c.changed()) {
    args.push_back("--" + k);
    args.push_back(v);
  }
  return args;
}
// A child's log so far (empty before it exists).
std::string read_log(const std::filesystem::path& log);
// Starts `cerebra args...` as a child process with stdout and stderr appended to `log`; returns its pid.
pid_t spawn_cerebra(const std::vector<std::string>& args, const std::filesystem::path& log);

// A config on the shipped CPS1988 fixture, small and single-threaded so tests stay fast and deterministic.
inline Config fixture_config(const std::string& model) {
  Config c;
  c.set("task", "cps1988", "test");
  c.set("data", source_path("data/fixtures/cps1988_small.csv"), "test");
  c.set("model", model, "test");
  c.set("threads", "1", "test");
  c.set("d_model", "16", "test");
  c.set("n_heads", "2", "test");
  c.set("mlp_hidden", "32", "test");
  c.set("epochs", "3", "test");
  c.set("batch_size", "64", "test");
  c.set("xgb_rounds", "30", "test");
  return c;
}

// A one-layer Transformer (d_model 8, 2 heads) for the copy task over 16 symbols at length 8
// (tests/test_tiny_model.cpp).
std::shared_ptr<Model> tiny_copy_model(const std::string& ffn_mult = "2");

// A fresh, empty directory under the system temp directory, unique to this process.
inline std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("cerebra_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// The message of the exception `f` throws; "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace cerebra::test
