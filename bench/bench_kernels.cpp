// The project's CPU kernels against their plain references, forward + backward, at the thread count bench_main sets
// (CEREBRA_THREADS, default 1: the single-core figures). Compare GFLOP/s with BM_GemmPeak/1024 (bench_main.cpp).
//
// Counters: GFLOP/s by the formula stated at each benchmark (the same formula for kernel and reference, so the
// ratio of GFLOP/s is the speed-up); extra_MB = peak tensor bytes allocated during one forward + backward beyond
// the inputs (counting CPU allocator, cerebra/runtime.h).
//
//   ./build/cerebra_bench --benchmark_filter='BM_(Attention|SelectiveScan|GemmPeak)'
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "cerebra/ops/attention.h"
#include "cerebra/ops/selective_scan.h"
#include "cerebra/core/runtime.h"

namespace {

using torch::Tensor;

// Runs fn() (one forward + backward) per iteration; sets GFLOP/s from `flops` per run and extra_MB.
template <typename Fn>
void run_timed(benchmark::State& state, double flops, Fn fn) {
  cerebra::install_counting_allocator();
  int64_t extra = 0;
  for (auto _ : state) {
    const int64_t base = cerebra::current_tensor_bytes();
    cerebra::reset_peak_tensor_bytes();
    fn();
    extra = std::max(extra, cerebra::peak_tensor_bytes() - base);
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["extra_MB"] = static_cast<double>(extra) / (1 << 20);
  state.counters["threads"] = at::get_num_threads();
}

// ---------------------------------------------------------------------------------------------------------------
// Attention: d_model 256, 4 heads (dh = 64), batch 1, n tokens, non-causal, forward + backward.
// FLOPs (flash-attention's benchmark convention): forward 4·B·H·n²·dh (the products QKᵀ and PV), backward 2.5× the
// forward (five products, the recomputed QKᵀ among them); forward + backward = 14·B·H·n²·dh. The naive reference
// is credited with the same count although its backward runs only four products.

void attention_fwd_bwd(benchmark::State& state, bool tiled) {
  const int64_t B = 1, H = 4, dh = 64, n = state.range(0);
  torch::manual_seed(0);
  auto q = torch::randn({B, H, n, dh}).requires_grad_(), k = torch::randn({B, H, n, dh}).requires_grad_(),
       v = torch::randn({B, H, n, dh}).requires_grad_();
  const auto dout = torch::randn({B, H, n, dh});
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  const double flops = 14.0 * B * H * static_cast<double>(n) * n * dh;
  run_timed(state, flops, [&] {
    auto out = tiled ? cerebra::ops::tiled_attention(q, k, v, {}, false, scale)
                     : cerebra::ops::attention_ref(q, k, v, {}, false, scale);
    auto g = torch::autograd::grad({out}, {q, k, v}, {dout});
    benchmark::DoNotOptimize(g[0].data_ptr<float>());
  });
}
BENCHMARK_CAPTURE(attention_fwd_bwd, tiled, true)
    ->Name("BM_AttentionTiled")
    ->Arg(256)
    ->Arg(1024)
    ->Arg(4096)
    ->Arg(8192)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(attention_fwd_bwd, naive, false)
    ->Name("BM_AttentionNaive")
    ->Arg(256)
    ->Arg(1024)
    ->Arg(4096)
    ->Arg(8192)
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------------------------
// Selective scan as a Mamba block with d_model 128 uses it: batch 1, D = 256 channels (expand 2), N = 16 states,
// with skip D, gate z and delta_bias under softplus; forward + backward.
// FLOPs (cerebra/ops/selective_scan.h): forward 8·B·D·L·N, backward 24·B·D·L·N; forward + backward 32·B·D·L·N.

void selective_scan_fwd_bwd(benchmark::State& state, bool fast) {
  const int64_t B = 1, D = 256, N = 16, L = state.range(0);
  torch::manual_seed(0);
  std::vector<Tensor> x{torch::randn({B, D, L}), 0.5 * torch::rand({B, D, L}), -torch::rand({D, N}) - 0.5,
                        torch::randn({B, N, L}), torch::randn({B, N, L}),      torch::randn({D}),
                        torch::randn({B, D, L}), torch::rand({D}) - 2.0};
  for (auto& t : x) t.requires_grad_();
  const auto dy = torch::randn({B, D, L});
  const double flops = 4.0 * cerebra::ops::selective_scan_flops(B, D, L, N);
  run_timed(state, flops, [&] {
    auto [y, last] = fast ? cerebra::ops::selective_scan(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], true)
                          : cerebra::ops::selective_scan_ref(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], true);
    auto g = torch::autograd::grad({y}, x, {dy});
    benchmark::DoNotOptimize(g[0].data_ptr<float>());
  });
}
BENCHMARK_CAPTURE(selective_scan_fwd_bwd, kernel, true)
    ->Name("BM_SelectiveScanKernel")
    ->Arg(1024)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(selective_scan_fwd_bwd, reference, false)
    ->Name("BM_SelectiveScanRef")
    ->Arg(1024)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond);

}  // namespace
