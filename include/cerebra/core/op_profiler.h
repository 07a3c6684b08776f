// Where the time goes: wall time per operator, from LibTorch's RecordFunction callbacks (the records its profiler
// is built on). Each outermost record on a thread (an ATen op, an autograd backward node such as
// "autograd::engine::evaluate_function: MmBackward0", or a user scope) is timed from its start to its end; records
// nested inside it belong to it, so the entries partition the time spent inside recorded operators, and the rest of
// a step's wall time is spent outside them (C++ glue, allocation between ops, Python-free framework overhead).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cerebra {

class OpProfiler {
 public:
  struct Entry {
    std::string op;
    double seconds = 0;
    int64_t calls = 0;
  };
  // Starts recording on construction, stops on destruction. Profilers do not nest.
  OpProfiler();
  ~OpProfiler();
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  std::vector<Entry> entries() const;  // by time, the largest first
  double total_seconds() const;        // the sum of the entries
  void reset();                        // forget what was recorded so far (e.g. a warm-up)
};

// What a profiled piece of work (a training step, an inference pass) spent, per repetition: the entries divided by
// the number of repetitions, and the wall time of one.
struct OpBreakdown {
  std::vector<OpProfiler::Entry> ops;  // the largest first
  double seconds = 0;                  // wall time per repetition
  double outside_seconds() const;      // the part outside recorded ops
};

// Runs `work` `repeats` times under a profiler (apart from any timed runs: the callbacks add a little to each op).
OpBreakdown profile_ops(const std::function<void()>& work, int repeats);
// A table of the `top` largest ops (ms per repetition, share, calls), the rest summed, and the time outside recorded
// ops, each line indented by `indent`; `what` names the repetition ("step", "pass").
std::string format_breakdown(const OpBreakdown& b, int top, const std::string& what, const std::string& indent = "    ");
// {"<what>_ms", "outside_ops_ms", "ops": [{"op", "ms_per_<what>", "calls_per_<what>"}]}.
nlohmann::json breakdown_json(const OpBreakdown& b, const std::string& what);
OpBreakdown breakdown_from_json(const nlohmann::json& j, const std::string& what);  // its inverse

}  // namespace cerebra
