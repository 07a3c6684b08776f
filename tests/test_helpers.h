// Shared helpers for the test binary.
#pragma once

#include <string>

#include "cerebra/config.h"

namespace cerebra::test {

inline std::string source_path(const std::string& rel) { return std::string(CEREBRA_SOURCE_DIR) + "/" + rel; }

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

}  // namespace cerebra::test
