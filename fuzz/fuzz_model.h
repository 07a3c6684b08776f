// A tiny sequence model (2 attention layers, d_model 8, 2 heads, feed-forward 16) for the targets that load
// weights, pruning state or resume state into a model, and one forward pass that checks the model still runs.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

#include <yaml-cpp/exceptions.h>

#include <c10/util/Logging.h>
#include <torch/torch.h>

#include "cerebra/core/batch.h"
#include "cerebra/core/config.h"
#include "cerebra/data/task.h"
#include "cerebra/models/models.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"

namespace cerebra_fuzz {

// One intra-op thread, and c10::Error without its C++ backtrace: LibTorch 1.13 symbolises the stack (dladdr per
// frame) each time it throws, which took most of the time of an input its reader rejects. The message is unchanged.
inline void init_torch() {
  torch::set_num_threads(1);
  c10::SetStackTraceFetcher([] { return std::string(); });
}

inline std::shared_ptr<cerebra::Model> tiny_model() {
  static const cerebra::RunSpec spec = [] {
    cerebra::Config c;
    const std::pair<const char*, const char*> keys[] = {{"task", "copy"}, {"model", "transformer"}, {"d_model", "8"},
                                                         {"n_heads", "2"},  {"n_layers", "2"},         {"ffn_mult", "2"},
                                                         {"dropout", "0"},  {"threads", "1"}};
    for (const auto& [k, v] : keys) c.set(k, v, "fuzz");
    return cerebra::parse_run_spec(c, false);
  }();
  cerebra::TaskInfo info;
  info.name = "copy";
  info.head = cerebra::HeadKind::TokenClassification;
  info.vocab = 16;
  info.n = 8;
  info.n_classes = 16;
  torch::manual_seed(0);
  auto model = cerebra::make_model(spec.model, info);
  model->eval();
  return model;
}

// One forward pass of one example; the output must have the task's shape.
inline void forward_check(cerebra::Model& model) {
  torch::NoGradGuard ng;
  cerebra::Batch b;
  b.tokens = torch::arange(8, torch::kLong).remainder(16).unsqueeze(0);
  b.mask = torch::ones({1, 8}, torch::kBool);
  b.y = torch::zeros({1, 8}, torch::kLong);
  const torch::Tensor out = model.forward(b);
  if (out.size(0) != 1 || out.size(-1) != 16) std::abort();
}

// Runs f; the library's documented errors (c10::Error, std::runtime_error with a message) end it and give false.
// A yaml-cpp exception is a std::runtime_error too, but one escaping the library means a YAML error without the
// file and line: it aborts, as does anything else (it escapes to libFuzzer).
template <typename F>
bool attempt(F&& f) {
  try {
    f();
    return true;
  } catch (const YAML::Exception& e) {
    std::fprintf(stderr, "yaml-cpp exception escaped: %s\n", e.what());
    std::abort();
  } catch (const c10::Error&) {
  } catch (const std::runtime_error&) {
  }
  return false;
}

}  // namespace cerebra_fuzz
