// Where the time goes: wall time per operator, from LibTorch's RecordFunction callbacks (the records its profiler
// is built on). Each outermost record on a thread (an ATen op, an autograd backward node such as
// "autograd::engine::evaluate_function: MmBackward0", or a user scope) is timed from its start to its end; records
// nested inside it belong to it, so the entries partition the time spent inside recorded operators, and the rest of
// a step's wall time is spent outside them (C++ glue, allocation between ops, Python-free framework overhead).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

}  // namespace cerebra
