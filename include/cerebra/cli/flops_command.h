// `cerebra flops`: the analytic cost of one layer of every architecture, set against the complexity formulas and
// worked examples of the design documents (seed 000 "Beyond Transformers", seed 003 survey), with a claims check.
//
// For one shape (n tokens, width d) it prints, per architecture (Transformer attention, LSTM, gated CNN, Mamba,
// Cerebra with bounded and unbounded memory):
//   (a) the document's formula and the number it gives (e.g. n²·d = 51.2e9 for n = 10,000, d = 512),
//   (b) the project's analytic forward FLOPs of one layer, SequenceMixer::flops(n) of make_mixer(name, options)
//       with d_model = d (2 FLOPs per multiply-add of matmul-class ops, the estimator's convention),
//   (c) the ratio (b)/(a),
//   (d) the growth exponents log2(flops(2n)/flops(n)) and log2(flops(d)/flops(d/2)) (local, at this shape),
//   (e) an activation-memory estimate of one forward (floats, batch 1) with its formula and growth exponent,
// then a claims check: each claim evaluated against this arithmetic and marked SUPPORTED, NOT SUPPORTED or
// SUPPORTED ONLY IF ..., the verdict decided by comparing ratios and exponents.
//
// Options: --n, --d, --kernel (CNN kernel), --topk (Cerebra routed tokens), --window, --memory-max,
// --compression-ratio, --width-scale, --d-state, --heads, --examples/--no-examples (the documents' worked
// examples: n=10,000 d=512; n=1024 d=512 kernel=5; n=1000 d=64 k=50), --json FILE (the whole report as JSON).
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace cerebra {

class Commands;

// Adds the `flops` subcommand to `app` (include/cerebra/cli/command.h).
CLI::App* add_flops_command(CLI::App* app, Commands& commands);

}  // namespace cerebra
