// `cerebra export --run DIR --int8`: turns a trained run (fp32 or QAT) into a run directory whose Linear layers run
// real int8 arithmetic through LibTorch's quantised engine, and measures it against fp32.
//
// The exported directory DIR2 (default DIR-int8) holds
//   config.yaml    the run's config with int8: true, int8_engine and int8_activations (and threads, if given)
//   split.json     the run's split
//   model.pt       the fp32 checkpoint (embeddings, norms, convolutions, ... run from it; its Linear weights are not
//                  used by int8 inference)
//   model_int8.pt  per Linear: int8 weights (per output channel, symmetric), their scales, the activation ranges
//   summary.json   the source summary with "metrics" replaced by the int8 test metrics (as `cerebra eval` computes
//                  them), "source_metrics", and "int8": engine, activations, per-layer report, speed and accuracy of
//                  fp32 / fake-quant / int8 on the test split
// so that `cerebra eval --run DIR2` rebuilds the model, loads both files and runs int8 inference.
//
// Speed: examples per second over the whole test split (batches of eval_batch_size), `repeats` passes each after one
// warm-up pass; fp32 (a second, plain copy of the model) and int8 passes alternate, with the same threads in the same
// process, so a change in the machine's load affects both; the medians are reported.
// Activations: dynamic (quantized::linear_dynamic, range per call) is the default; static (quantized::linear with
// the QAT-tracked ranges, or ranges calibrated on up to calib_rows training rows for a run without QAT).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace CLI {
class App;
}

namespace cerebra {

class Commands;

struct Int8ExportOptions {
  std::string run_dir;
  std::string out_dir;                  // empty = run_dir + "-int8"
  std::string engine = "onednn";        // onednn | qnnpack
  std::string activations = "dynamic";  // dynamic | static
  int repeats = 5;
  int threads = -1;         // < 0: the run's `threads`
  int64_t batch_size = 0;   // <= 0: the run's eval_batch_size
  int64_t calib_rows = 2048;
  int breakdown = 0;  // > 0: profile --repeats more passes of each and print this many of the largest ops
  bool quiet = false;
};

// Exports and measures; returns the "int8" report (also written into DIR2/summary.json).
nlohmann::json export_int8(const Int8ExportOptions& options);

// Adds the `export` subcommand (include/cerebra/cli/command.h).
CLI::App* add_export_command(CLI::App* app, Commands& commands);

}  // namespace cerebra
