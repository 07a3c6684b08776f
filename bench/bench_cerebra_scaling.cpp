// Scaling of one Cerebra layer against dense attention: forward + backward at d = 256, n = 1k … 64k, batch 1.
//
// FLOPs: the analytic forward count of each layer (CerebraLayer::realised_flops of the pass that ran, and
// 8·n·d² + 4·n²·d for dense attention), times 3 for forward + backward (each matmul's backward is two matmuls of
// the same size). GFLOP/s = 3·forward FLOPs / wall time; compare with BM_GemmPeak.
// Dense attention is the naive torch-op formulation (materialised n×n scores); it is skipped when its score-sized
// tensors would not fit in ~8 GiB.
// Cerebra configuration: topk routing, k = 32, window w = 32 (33 keys), conv compressor, r = 0.5, memory_max = 64,
// s = 0.5 (d_c = 128), 4 heads.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "cerebra/models/cerebra_layer.h"

namespace {

using cerebra::CerebraLayer;
using cerebra::CerebraOptions;

constexpr int64_t kDModel = 256;
constexpr int64_t kHeads = 4;

CerebraOptions bench_options(cerebra::CompressorKind kind) {
  CerebraOptions o;
  o.d_model = kDModel;
  o.n_heads = kHeads;
  o.mode = cerebra::RoutingMode::kTopK;
  o.topk = 32;
  o.window = 32;
  o.compressor = kind;
  o.compression_ratio = 0.5;
  o.memory_max = 64;
  o.width_scale = 0.5;
  return o;
}

void set_counters(benchmark::State& state, int64_t n, double forward_flops) {
  const double it = static_cast<double>(state.iterations());
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(n) * it, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(3.0 * forward_flops * it / 1e9, benchmark::Counter::kIsRate);
  state.counters["fwd_GFLOP"] = forward_flops / 1e9;
}

// x: (1, n, d) -> forward + backward of one Cerebra layer in training mode (router noise on).
void run_cerebra(benchmark::State& state, cerebra::CompressorKind kind) {
  const int64_t n = state.range(0);
  torch::manual_seed(0);
  auto layer = std::make_shared<CerebraLayer>(bench_options(kind));
  layer->train();
  auto x = torch::randn({1, n, kDModel}).requires_grad_(true);
  auto gy = torch::randn({1, n, kDModel});
  for (auto _ : state) {
    layer->zero_grad();
    x.mutable_grad() = torch::Tensor();
    auto y = layer->forward(x, {});
    y.backward(gy);
  }
  set_counters(state, n, layer->realised_flops());
}

void BM_CerebraConv(benchmark::State& state) { run_cerebra(state, cerebra::CompressorKind::kConv); }
void BM_CerebraAttnPool(benchmark::State& state) { run_cerebra(state, cerebra::CompressorKind::kAttnPool); }

// Naive multi-head attention from torch ops, the same projections as the dense mode of the layer.
void BM_DenseAttention(benchmark::State& state) {
  const int64_t n = state.range(0), d = kDModel, h = kHeads, e = d / h;
  // Scores, probabilities and their two gradients are (h, n, n) fp32 each.
  const double need_gib = 4.0 * static_cast<double>(h) * n * n * 4.0 / (1024.0 * 1024.0 * 1024.0);
  if (need_gib > 8.0) {
    char msg[96];
    std::snprintf(msg, sizeof msg, "would need %.0f GiB for the %lld x %lld scores", need_gib,
                  static_cast<long long>(n), static_cast<long long>(n));
    state.SkipWithError(msg);
    return;
  }
  torch::manual_seed(0);
  torch::nn::Linear qkv(d, 3 * d), out(d, d);
  auto x = torch::randn({1, n, d}).requires_grad_(true);
  auto gy = torch::randn({1, n, d});
  for (auto _ : state) {
    qkv->zero_grad();
    out->zero_grad();
    x.mutable_grad() = torch::Tensor();
    auto t = qkv->forward(x).view({1, n, 3, h, e}).permute({2, 0, 3, 1, 4});  // (3, 1, h, n, e)
    auto s = torch::matmul(t[0], t[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(e));
    auto y = torch::matmul(torch::softmax(s, -1), t[2]).transpose(1, 2).reshape({1, n, d});
    out->forward(y).backward(gy);
  }
  set_counters(state, n, cerebra::dense_attention_flops(n, d));
}

#define CEREBRA_SCALING_ARGS ->Arg(1024)->Arg(4096)->Arg(16384)->Arg(65536)->Unit(benchmark::kMillisecond)->UseRealTime()
BENCHMARK(BM_CerebraConv) CEREBRA_SCALING_ARGS;
BENCHMARK(BM_CerebraAttnPool) CEREBRA_SCALING_ARGS;
BENCHMARK(BM_DenseAttention) CEREBRA_SCALING_ARGS;
#undef CEREBRA_SCALING_ARGS

}  // namespace
