// `cerebra bench layers`: forward + backward time, throughput and peak tensor memory of one sequence-mixer layer
// per implementation and sequence length, against the machine's measured GEMM peak.
//
// GFLOP/s = 3 × (analytic forward FLOPs, SequenceMixer::flops(n)) × batch / median step time: the backward of each
// matmul-class op is two ops of the same size. Peak MiB = peak tensor bytes of one step above the bytes held before
// it (counting CPU allocator). Results go to <out>/results.csv and <out>/results.json, skipped configurations
// (memory estimate over the limit, predicted time over the budget, long sequential LSTM runs) included with the
// reason.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace cerebra {

class Commands;

// Adds the `layers` subcommand under `bench` (include/cerebra/cli/command.h).
CLI::App* add_bench_layers_command(CLI::App* bench, Commands& commands);

}  // namespace cerebra
