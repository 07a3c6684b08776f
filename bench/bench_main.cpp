// Entry point of the Google Benchmark binary. Each bench/*.cpp registers its benchmarks; they print GFLOP/s
// beside the machine's GEMM peak (BM_GemmPeak). Threads: CEREBRA_THREADS (default 1, the single-core figures).
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>

#include "cerebra/core/runtime.h"

namespace {

// The reference for every GFLOP/s figure: an n x n fp32 matmul, 2 n^3 FLOPs.
void BM_GemmPeak(benchmark::State& state) {
  const int64_t n = state.range(0);
  torch::NoGradGuard g;
  auto a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  for (auto _ : state) {
    torch::mm_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr<float>());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemmPeak)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  const char* t = std::getenv("CEREBRA_THREADS");
  int threads = cerebra::set_threads(t ? std::atoi(t) : 1);
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("blas", cerebra::loaded_blas_library());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
