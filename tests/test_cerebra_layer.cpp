// Tests of the Cerebra layer: dense equivalence, routing (exact k, padding, ties, cap), router gradients, a
// double-precision finite-difference check, fast vs reference paths, analytic vs measured FLOPs, the expected cost,
// and the O(n) cost claim.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "cerebra/models/cerebra_layer.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/mixer.h"

namespace cerebra {
namespace {

const RoutingMode kModes[] = {RoutingMode::kSoft, RoutingMode::kTopK, RoutingMode::kThreshold};
const CompressorKind kKinds[] = {CompressorKind::kConv, CompressorKind::kAttnPool, CompressorKind::kHybrid};

CerebraOptions small_options(RoutingMode mode, CompressorKind kind) {
  CerebraOptions o;
  o.d_model = 16;
  o.n_heads = 2;
  o.mode = mode;
  o.compressor = kind;
  o.topk = 4;
  o.k_max = 5;
  o.window = 4;
  o.memory_max = 4;
  o.compression_ratio = 0.5;
  o.width_scale = 0.5;
  o.gumbel = RouterNoise::kOff;
  return o;
}

// lens: real tokens per sequence -> (B, n) bool
torch::Tensor ragged_mask(const std::vector<int64_t>& lens, int64_t n) {
  auto m = torch::zeros({static_cast<int64_t>(lens.size()), n}, torch::kBool);
  for (size_t b = 0; b < lens.size(); ++b) m[b].narrow(0, 0, lens[b]).fill_(true);
  return m;
}

torch::Tensor param(const torch::nn::Module& mod, const std::string& name) {
  return mod.named_parameters()[name];
}

// Plain multi-head softmax attention written out from the layer's weights: the dense-mode reference.
// x: (B, n, d), mask: (B, n) -> (B, n, d)
torch::Tensor plain_mha(const CerebraLayer& l, const torch::Tensor& x, const torch::Tensor& mask) {
  const int64_t B = x.size(0), n = x.size(1), d = l.options().d_model, h = l.options().n_heads, e = d / h;
  auto wkv = param(l, "kv_proj.weight"), bkv = param(l, "kv_proj.bias");
  auto q = torch::matmul(x, param(l, "q_proj.weight").t()) + param(l, "q_proj.bias");
  auto k = torch::matmul(x, wkv.narrow(0, 0, d).t()) + bkv.narrow(0, 0, d);
  auto v = torch::matmul(x, wkv.narrow(0, d, d).t()) + bkv.narrow(0, d, d);
  auto heads = [&](const torch::Tensor& t) { return t.view({B, n, h, e}).transpose(1, 2); };
  auto s = torch::matmul(heads(q), heads(k).transpose(-2, -1)) / std::sqrt(static_cast<double>(e));
  s = s.masked_fill(mask.logical_not().view({B, 1, 1, n}), -std::numeric_limits<double>::infinity());
  auto y = torch::matmul(torch::softmax(s, -1), heads(v)).transpose(1, 2).reshape({B, n, d});
  return torch::matmul(y, param(l, "out_proj.weight").t()) + param(l, "out_proj.bias");
}

double max_diff_valid(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& mask) {
  return ((a - b).abs() * mask.unsqueeze(-1).to(a.scalar_type())).max().item<double>();
}

// The scalar loss of the gradient tests: a fixed random projection of the real rows.
torch::Tensor probe_loss(const torch::Tensor& y, const torch::Tensor& mask, const torch::Tensor& weights) {
  return (y * weights * mask.unsqueeze(-1).to(y.scalar_type())).sum();
}

std::vector<int64_t> selected_indices(const torch::Tensor& sel_row) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < sel_row.size(0); ++i)
    if (sel_row[i].item<bool>()) out.push_back(i);
  return out;
}

// ---- dense equivalence -----------------------------------------------------------------------------------------

TEST(CerebraLayerDense, DenseModeReproducesMultiHeadAttention) {
  torch::manual_seed(0);
  auto o = small_options(RoutingMode::kTopK, CompressorKind::kConv);
  auto layer = std::make_shared<CerebraLayer>(o);
  layer->eval();
  auto x = torch::randn({2, 11, o.d_model});
  auto mask = ragged_mask({11, 7}, 11);
  auto ref = plain_mha(*layer, x, mask);

  layer->set_dense(true);
  auto y = layer->forward(x, mask);
  double diff = max_diff_valid(y, ref, mask);
  std::printf("dense vs plain MHA: max |diff| = %.3g\n", diff);
  EXPECT_LT(diff, 1e-5);
  EXPECT_DOUBLE_EQ(layer->realised_flops(), 2 * dense_attention_flops(11, o.d_model));
  EXPECT_EQ(layer->stats().at("memory_slots"), 0.0);

  // Routing every token (k >= n) with dense mode off: the compressor never runs and the output is the same.
  layer->set_dense(false);
  auto o_all = o;
  o_all.topk = 100;
  auto all = std::make_shared<CerebraLayer>(o_all);
  all->eval();
  {
    torch::NoGradGuard g;
    auto src = layer->named_parameters(), dst = all->named_parameters();
    for (auto& kv : src) dst[kv.key()].copy_(kv.value());
  }
  auto y_all = all->forward(x, mask);
  diff = max_diff_valid(y_all, ref, mask);
  std::printf("all tokens routed vs plain MHA: max |diff| = %.3g\n", diff);
  EXPECT_LT(diff, 1e-5);
  EXPECT_EQ(all->stats().at("memory_slots"), 0.0);
  EXPECT_DOUBLE_EQ(all->stats().at("tokens_routed"), 9.0);
}

// ---- routing ---------------------------------------------------------------------------------------------------

TEST(CerebraLayerRouting, TopKSelectsExactlyKRealTokens) {
  torch::manual_seed(1);
  auto o = small_options(RoutingMode::kTopK, CompressorKind::kConv);
  o.topk = 4;
  auto layer = std::make_shared<CerebraLayer>(o);
  layer->eval();
  const int64_t n = 10;
  auto x = torch::randn({3, n, o.d_model});
  auto mask = ragged_mask({10, 6, 3}, n);
  layer->forward(x, mask);
  auto sel = layer->last_selected();
  auto z = layer->router->score->forward(x).squeeze(-1).detach();  // (B, n)

  const std::vector<int64_t> expect_count = {4, 4, 3};
  for (int64_t b = 0; b < 3; ++b) {
    auto got = selected_indices(sel[b]);
    ASSERT_EQ(static_cast<int64_t>(got.size()), expect_count[b]) << "sequence " << b;
    // The selected tokens are the highest-scoring real ones, and never padding.
    const int64_t len = mask[b].sum().item<int64_t>();
    auto top = std::get<1>(z[b].narrow(0, 0, len).topk(expect_count[b]));
    auto want = std::get<0>(top.sort());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_LT(got[i], len);
      EXPECT_EQ(got[i], want[static_cast<int64_t>(i)].item<int64_t>());
    }
  }
  EXPECT_NEAR(layer->stats().at("tokens_routed"), 11.0 / 3.0, 1e-12);

  // Equal scores: the lower indices win, every time.
  {
    torch::NoGradGuard g;
    layer->router->score->weight.zero_();
    layer->router->score->bias.zero_();
  }
  for (int rep = 0; rep < 2; ++rep) {
    layer->forward(x, mask);
    EXPECT_EQ(selected_indices(layer->last_selected()[0]), (std::vector<int64_t>{0, 1, 2, 3}));
    EXPECT_EQ(selected_indices(layer->last_selected()[1]), (std::vector<int64_t>{0, 1, 2, 3}));
    EXPECT_EQ(selected_indices(layer->last_selected()[2]), (std::vector<int64_t>{0, 1, 2}));
  }
}

TEST(CerebraLayerRouting, ThresholdRoutesGatesAboveHalfCappedAtKMax) {
  torch::manual_seed(2);
  auto o = small_options(RoutingMode::kThreshold, CompressorKind::kAttnPool);
  o.k_max = 5;
  auto layer = std::make_shared<CerebraLayer>(o);
  layer->eval();
  const int64_t n = 10;
  auto x = torch::randn({3, n, o.d_model});
  auto mask = ragged_mask({10, 6, 3}, n);
  auto z = layer->router->score->forward(x).squeeze(-1).detach();

  // Every gate open: capped at k_max, best scores first, never padding.
  {
    torch::NoGradGuard g;
    layer->router->score->bias.fill_(10.0);
  }
  layer->forward(x, mask);
  const std::vector<int64_t> expect_count = {5, 5, 3};
  for (int64_t b = 0; b < 3; ++b) {
    auto got = selected_indices(layer->last_selected()[b]);
    ASSERT_EQ(static_cast<int64_t>(got.size()), expect_count[b]);
    const int64_t len = mask[b].sum().item<int64_t>();
    auto want = std::get<0>(std::get<1>(z[b].narrow(0, 0, len).topk(expect_count[b])).sort());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[static_cast<int64_t>(i)].item<int64_t>());
  }

  // Below the cap: exactly the real tokens with g >= 0.5.
  {
    torch::NoGradGuard g;
    layer->router->score->bias.zero_();
    layer->router->score->weight.zero_();
    layer->router->score->weight[0][0] = 1.0;  // z_i = x_i0
  }
  auto x2 = x.clone();
  x2.select(2, 0).fill_(-1.0);
  x2[0][2][0] = 1.0;
  x2[0][7][0] = 2.0;
  x2[1][8][0] = 3.0;  // padding in sequence 1: never routed
  auto y = layer->forward(x2, mask);
  EXPECT_EQ(selected_indices(layer->last_selected()[0]), (std::vector<int64_t>{2, 7}));
  EXPECT_TRUE(selected_indices(layer->last_selected()[1]).empty());
  EXPECT_TRUE(selected_indices(layer->last_selected()[2]).empty());
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());

  // Every gate closed: no full path at all.
  {
    torch::NoGradGuard g;
    layer->router->score->bias.fill_(-10.0);
  }
  y = layer->forward(x, mask);
  EXPECT_EQ(layer->last_selected().sum().item<int64_t>(), 0);
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  const auto c = cerebra_cost(o, n);
  EXPECT_DOUBLE_EQ(layer->realised_flops(), 3 * c.executed(0, n));
}

// Each hard-routed row must equal its path computed on its own: routed rows the plain multi-head attention row,
// the others the soft mode with every gate closed (compressed path only, no permutation involved).
TEST(CerebraLayerRouting, HardRoutingPutsEachPathsOutputAtItsPosition) {
  for (RoutingMode mode : {RoutingMode::kTopK, RoutingMode::kThreshold}) {
    torch::manual_seed(10);
    auto o = small_options(mode, CompressorKind::kConv);
    o.topk = 3;
    o.k_max = 4;
    auto layer = std::make_shared<CerebraLayer>(o);
    auto o_soft = o;
    o_soft.mode = RoutingMode::kSoft;
    auto soft = std::make_shared<CerebraLayer>(o_soft);
    layer->to(torch::kDouble);
    soft->to(torch::kDouble);
    {
      torch::NoGradGuard g;
      layer->router->score->weight.normal_(0.0, 0.3);
      auto src = layer->named_parameters(), dst = soft->named_parameters();
      for (auto& kv : src) dst[kv.key()].copy_(kv.value());
      soft->router->score->bias.fill_(-1e4);  // g = 0: y = out_proj(compressed path) everywhere
    }
    layer->eval();
    soft->eval();
    const int64_t n = 29;
    auto x = torch::randn({3, n, o.d_model}, torch::kDouble);
    auto mask = ragged_mask({29, 18, 2}, n);
    auto y = layer->forward(x, mask);
    auto y_full = plain_mha(*layer, x, mask);
    auto y_comp = soft->forward(x, mask);
    auto sel = layer->last_selected();
    auto counts = sel.sum(1);
    std::printf("%s: routed per sequence %ld %ld %ld\n", to_string(mode).c_str(), counts[0].item<long>(),
                counts[1].item<long>(), counts[2].item<long>());
    EXPECT_GT(sel.sum().item<int64_t>(), 0);
    if (mode == RoutingMode::kThreshold) EXPECT_LT(counts.min().item<int64_t>(), counts.max().item<int64_t>());
    for (int64_t b = 0; b < 3; ++b) {
      for (int64_t i = 0; i < mask[b].sum().item<int64_t>(); ++i) {
        auto want = sel[b][i].item<bool>() ? y_full[b][i] : y_comp[b][i];
        EXPECT_LT((y[b][i] - want).abs().max().item<double>(), 1e-12) << "sequence " << b << " token " << i;
      }
    }
  }
}

TEST(CerebraLayerRouting, GradientsReachTheRouter) {
  for (RoutingMode mode : {RoutingMode::kTopK, RoutingMode::kThreshold}) {
    for (RouterNoise gumbel : {RouterNoise::kOff, RouterNoise::kOn}) {
      torch::manual_seed(3);
      auto o = small_options(mode, CompressorKind::kHybrid);
      o.gumbel = gumbel;
      auto layer = std::make_shared<CerebraLayer>(o);
      layer->train();
      auto x = torch::randn({2, 12, o.d_model});
      auto mask = ragged_mask({12, 9}, 12);
      auto y = layer->forward(x, mask);
      auto routed = layer->last_selected().sum().item<int64_t>();
      EXPECT_GT(routed, 0);
      EXPECT_LT(routed, 21);
      probe_loss(y, mask, torch::randn_like(y)).backward();
      auto gw = layer->router->score->weight.grad(), gb = layer->router->score->bias.grad();
      ASSERT_TRUE(gw.defined());
      EXPECT_GT(gw.abs().sum().item<double>(), 0.0) << to_string(mode) << " gumbel " << to_string(gumbel);
      EXPECT_GT(gb.abs().sum().item<double>(), 0.0) << to_string(mode) << " gumbel " << to_string(gumbel);
    }
  }
}

TEST(CerebraLayerRouting, NoiseOnlyInTrainingAndTemperatureSharpens) {
  torch::manual_seed(4);
  auto o = small_options(RoutingMode::kTopK, CompressorKind::kConv);
  o.gumbel = RouterNoise::kOn;
  auto layer = std::make_shared<CerebraLayer>(o);
  auto x = torch::randn({1, 32, o.d_model});
  layer->eval();
  layer->forward(x, {});
  auto sel_eval = layer->last_selected().clone();
  auto g1 = layer->last_gates().clone();
  layer->forward(x, {});
  EXPECT_TRUE(torch::equal(sel_eval, layer->last_selected()));
  layer->set_temperature(0.01);
  layer->forward(x, {});
  auto g2 = layer->last_gates();
  EXPECT_GT((g2 - 0.5).abs().mean().item<double>(), (g1 - 0.5).abs().mean().item<double>());

  layer->set_temperature(1.0);
  layer->train();
  bool differs = false;
  for (int rep = 0; rep < 5 && !differs; ++rep) {
    layer->forward(x, {});
    differs = !torch::equal(sel_eval, layer->last_selected());
  }
  EXPECT_TRUE(differs) << "training noise never changed the selection";
}

// ---- exactness of the fast paths and of the soft-mode gradients ------------------------------------------------

TEST(CerebraLayerReference, FastPathsMatchReferenceOnOutputsAndGradients) {
  for (RoutingMode mode : kModes) {
    for (CompressorKind kind : kKinds) {
      torch::manual_seed(5);
      auto o = small_options(mode, kind);
      o.k_max = 4;
      auto layer = std::make_shared<CerebraLayer>(o);
      layer->to(torch::kDouble);
      layer->eval();
      // 37 positions: three window blocks of 16, so queries near block edges reach into the neighbours.
      auto x = torch::randn({3, 37, o.d_model}, torch::kDouble).requires_grad_(true);
      auto mask = ragged_mask({37, 20, 2}, 37);
      auto w = torch::randn({3, 37, o.d_model}, torch::kDouble);

      std::vector<torch::Tensor> out, grads;
      for (bool ref : {false, true}) {
        layer->set_use_reference(ref);
        layer->zero_grad();
        x.mutable_grad() = torch::Tensor();
        auto y = layer->forward(x, mask);
        probe_loss(y, mask, w).backward();
        out.push_back(y.detach());
        std::vector<torch::Tensor> g = {x.grad().clone()};
        for (auto& p : layer->parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
        grads.push_back(torch::cat([&] {
          std::vector<torch::Tensor> flat;
          for (auto& t : g) flat.push_back(t.reshape({-1}));
          return flat;
        }()));
      }
      const double dy = max_diff_valid(out[0], out[1], mask);
      const double dg = (grads[0] - grads[1]).abs().max().item<double>();
      std::printf("%-9s %-8s fast vs reference: max |dy| = %.2g, max |dgrad| = %.2g (|grad| max %.2g)\n",
                  to_string(mode).c_str(), to_string(kind).c_str(), dy, dg, grads[1].abs().max().item<double>());
      EXPECT_LT(dy, 1e-12);
      EXPECT_LT(dg, 1e-10);
    }
  }
}

TEST(CerebraLayerGradCheck, SoftModeMatchesCentralFiniteDifferences) {
  for (CompressorKind kind : kKinds) {
    torch::manual_seed(6);
    auto o = small_options(RoutingMode::kSoft, kind);
    o.tau = 0.7;
    auto layer = std::make_shared<CerebraLayer>(o);
    layer->to(torch::kDouble);
    layer->eval();
    auto x = torch::randn({2, 9, o.d_model}, torch::kDouble).requires_grad_(true);
    auto mask = ragged_mask({9, 6}, 9);
    auto w = torch::randn({2, 9, o.d_model}, torch::kDouble);
    probe_loss(layer->forward(x, mask), mask, w).backward();

    auto rw = layer->router->score->weight, rb = layer->router->score->bias;
    struct Probe {
      torch::Tensor t;
      int64_t flat;
      const char* what;
    };
    std::vector<Probe> probes = {{x, 0, "x[0,0,0]"},       {x, 5 * 16 + 3, "x[0,5,3]"},
                                 {x, 9 * 16 + 20, "x[1,1,4]"}, {rw, 0, "router.w[0]"},
                                 {rw, 7, "router.w[7]"},   {rb, 0, "router.b"}};
    const double eps = 1e-6;
    for (auto& p : probes) {
      const double analytic = p.t.grad().reshape({-1})[p.flat].item<double>();
      double f[2];
      for (int s = 0; s < 2; ++s) {
        torch::NoGradGuard g;
        auto v = p.t.view({-1});
        const double orig = v[p.flat].item<double>();
        v[p.flat] = orig + (s == 0 ? eps : -eps);
        f[s] = probe_loss(layer->forward(x, mask), mask, w).item<double>();
        v[p.flat] = orig;
      }
      const double numeric = (f[0] - f[1]) / (2 * eps);
      const double err = std::abs(numeric - analytic) / std::max(1.0, std::abs(analytic));
      EXPECT_LT(err, 1e-6) << to_string(kind) << " " << p.what << ": analytic " << analytic << ", numeric "
                           << numeric;
      EXPECT_NE(analytic, 0.0) << p.what;
    }
  }
}

// ---- compute accounting ----------------------------------------------------------------------------------------

TEST(CerebraLayerFlops, AnalyticMatchesMeasuredForEveryModeAndCompressor) {
  struct Case {
    RoutingMode mode;
    CompressorKind kind;
    bool dense, train_rec;
  };
  std::vector<Case> cases;
  for (RoutingMode mode : kModes)
    for (CompressorKind kind : kKinds) cases.push_back({mode, kind, false, false});
  cases.push_back({RoutingMode::kTopK, CompressorKind::kConv, true, false});
  cases.push_back({RoutingMode::kThreshold, CompressorKind::kAttnPool, false, true});
  cases.push_back({RoutingMode::kTopK, CompressorKind::kHybrid, false, true});

  for (const Case& cs : cases) {
    torch::manual_seed(7);
    CerebraOptions o;
    o.d_model = 32;
    o.n_heads = 4;
    o.mode = cs.mode;
    o.compressor = cs.kind;
    o.topk = 6;
    o.k_max = 9;
    o.window = 8;
    o.memory_max = 8;
    o.rec_weight = cs.train_rec ? 0.1 : 0.0;
    auto layer = std::make_shared<CerebraLayer>(o);
    layer->set_dense(cs.dense);
    if (cs.train_rec) layer->train(); else layer->eval();
    const int64_t n = 50;
    auto x = torch::randn({2, n, o.d_model});
    auto mask = ragged_mask({50, 37}, n);
    double measured = 0;
    {
      FlopCounter counter;
      auto y = layer->forward(x, mask);
      if (cs.train_rec) layer->aux_loss();
      measured = counter.total();
    }
    const double analytic = layer->realised_flops();
    const double rel = std::abs(measured - analytic) / analytic;
    std::printf("%-9s %-8s%s%s analytic %.6g measured %.6g (rel %.2g)\n", to_string(cs.mode).c_str(),
                to_string(cs.kind).c_str(), cs.dense ? " dense" : "", cs.train_rec ? " +rec" : "", analytic, measured,
                rel);
    EXPECT_LT(rel, 0.05);
  }
}

TEST(CerebraLayerFlops, ExpectedCostIsDifferentiableAndEqualsRealisedForHardGates) {
  for (RoutingMode mode : {RoutingMode::kTopK, RoutingMode::kThreshold}) {
    torch::manual_seed(8);
    auto o = small_options(mode, CompressorKind::kAttnPool);
    o.topk = 5;
    o.k_max = 8;
    o.tau = 0.01;
    auto layer = std::make_shared<CerebraLayer>(o);
    layer->to(torch::kDouble);
    layer->eval();
    // z_i = x_i0 = ±3: gates σ(±300) are 0 or 1; five chosen tokens per sequence.
    {
      torch::NoGradGuard g;
      layer->router->score->weight.zero_();
      layer->router->score->weight[0][0] = 1.0;
      layer->router->score->bias.zero_();
    }
    const int64_t n = 24;
    auto x = torch::randn({2, n, o.d_model}, torch::kDouble);
    x.select(2, 0).fill_(-3.0);
    for (int64_t i : {1, 4, 9, 16, 23}) x[0][i][0] = 3.0;
    for (int64_t i : {0, 2, 3, 11, 20}) x[1][i][0] = 3.0;
    layer->forward(x, {});
    EXPECT_EQ(layer->last_selected().sum().item<int64_t>(), 10);
    const double expected = layer->expected_flops().item<double>();
    std::printf("%s hard gates: expected %.10g realised %.10g\n", to_string(mode).c_str(), expected,
                layer->realised_flops());
    EXPECT_NEAR(expected, layer->realised_flops(), 1e-9 * layer->realised_flops());

    // Soft gates: the expected cost has a gradient in the router.
    layer->set_temperature(1.0);
    layer->train();
    layer->zero_grad();
    layer->forward(torch::randn({2, n, o.d_model}, torch::kDouble), {});
    auto e = layer->expected_flops();
    ASSERT_TRUE(e.requires_grad());
    e.backward();
    EXPECT_GT(layer->router->score->weight.grad().abs().sum().item<double>(), 0.0);
  }
}

TEST(CerebraLayerFlops, CostPerTokenDoesNotGrowWithLength) {
  for (CompressorKind kind : kKinds) {
    for (RoutingMode mode : {RoutingMode::kTopK, RoutingMode::kThreshold}) {
      CerebraOptions o;
      o.d_model = 64;
      o.n_heads = 4;
      o.mode = mode;
      o.compressor = kind;
      o.topk = 16;
      o.k_max = 16;
      o.window = 32;
      o.memory_max = 32;
      const double ratio = cerebra_flops(o, 4096) / cerebra_flops(o, 1024);
      EXPECT_GT(ratio, 3.9) << to_string(kind);
      EXPECT_LT(ratio, 4.05) << to_string(kind);
      o.memory_max = 0;  // m = ⌈r·n⌉ grows with n: quadratic
      const double grows = cerebra_flops(o, 4096) / cerebra_flops(o, 1024);
      EXPECT_GT(grows, 6.0) << to_string(kind);
    }
  }
  // The same in what actually runs: measured FLOPs of forward passes at n and 4n.
  CerebraOptions o;
  o.d_model = 32;
  o.n_heads = 4;
  o.topk = 8;
  o.window = 16;
  o.memory_max = 16;
  auto layer = std::make_shared<CerebraLayer>(o);
  layer->eval();
  torch::NoGradGuard g;
  double measured[2];
  for (int i = 0; i < 2; ++i) {
    auto x = torch::randn({1, i == 0 ? 512 : 2048, o.d_model});
    FlopCounter counter;
    layer->forward(x, {});
    measured[i] = counter.total();
  }
  std::printf("measured flops(2048)/flops(512) = %.4f\n", measured[1] / measured[0]);
  EXPECT_GT(measured[1] / measured[0], 3.9);
  EXPECT_LT(measured[1] / measured[0], 4.05);
  EXPECT_LT(cerebra_flops(o, 1 << 16), 0.01 * dense_attention_flops(1 << 16, o.d_model));
}

// ---- compressor and options ------------------------------------------------------------------------------------

TEST(CerebraLayerCompressor, MemoryRespectsPaddingAndReconstructionLossTrains) {
  for (CompressorKind kind : kKinds) {
    torch::manual_seed(9);
    auto o = small_options(RoutingMode::kTopK, kind);
    o.memory_max = 0;
    o.compression_ratio = 0.25;
    o.rec_weight = 0.5;
    o.pool_queries = 3;  // fewer learned queries than the 4 slots: attnpool resamples its bank
    auto comp = CerebraCompressor(o);
    const int64_t n = 16;
    auto x = torch::randn({2, n, o.d_model});
    auto mask = ragged_mask({16, 6}, n);
    auto mem = comp->forward(x, mask, true);
    EXPECT_EQ(mem.slots.sizes(), torch::IntArrayRef({2, 4, o.compressed_width()}));
    if (kind == CompressorKind::kConv) {
      // Segments of 4 tokens: sequence 1 has real tokens only in its first two segments.
      EXPECT_TRUE(torch::equal(mem.slot_mask[1], torch::tensor({true, true, false, false})));
    }
    // Padding never reaches the memory.
    auto x2 = x.clone();
    x2[1].narrow(0, 6, n - 6).normal_();
    auto mem2 = comp->forward(x2, mask, true);
    EXPECT_LT((mem.slots - mem2.slots).abs().max().item<double>(), 1e-6) << to_string(kind);
    ASSERT_TRUE(mem.rec_loss.defined());
    mem.rec_loss.backward();
    EXPECT_GT(comp->proj->weight.grad().abs().sum().item<double>(), 0.0);
    EXPECT_GT(comp->up->weight.grad().abs().sum().item<double>(), 0.0);
  }

  auto o = small_options(RoutingMode::kTopK, CompressorKind::kConv);
  o.rec_weight = 0.5;
  auto layer = std::make_shared<CerebraLayer>(o);
  auto x = torch::randn({1, 12, o.d_model});
  layer->train();
  layer->forward(x, {});
  ASSERT_TRUE(layer->aux_loss().defined());
  layer->eval();
  layer->forward(x, {});
  EXPECT_FALSE(layer->aux_loss().defined());
}

TEST(CerebraLayerOptions, BuiltByNameFromMixerOptions) {
  MixerOptions mo;
  mo.d_model = 24;
  mo.n_heads = 3;
  mo = with_own_options("cerebra", mo,
                        {{"router_mode", "threshold"}, {"compressor", "attnpool"}, {"topk", "3"}, {"k_max", "7"},
                         {"window", "6"}, {"tau", "0.5"}, {"gumbel", "false"}, {"memory_max", "5"},
                         {"rec_weight", "0.1"}, {"width_scale", "0.4"}, {"compression_ratio", "0.3"}});
  auto mixer = make_mixer("cerebra", mo);
  auto layer = std::dynamic_pointer_cast<CerebraLayer>(mixer);
  ASSERT_TRUE(layer);
  const auto& o = layer->options();
  EXPECT_EQ(o.mode, RoutingMode::kThreshold);
  EXPECT_EQ(o.compressor, CompressorKind::kAttnPool);
  EXPECT_EQ(o.topk, 3);
  EXPECT_EQ(o.k_max, 7);
  EXPECT_EQ(o.window, 6);
  EXPECT_EQ(o.memory_max, 5);
  EXPECT_DOUBLE_EQ(o.tau, 0.5);
  EXPECT_EQ(o.gumbel, RouterNoise::kOff);
  EXPECT_EQ(o.compressed_width(), 12);  // ⌈0.4·24⌉ = 10, rounded up to a multiple of 3 heads
  EXPECT_EQ(o.memory_slots(10), 3);
  EXPECT_EQ(o.memory_slots(100), 5);
  EXPECT_EQ(o.window_keys(), 7);
  auto y = mixer->forward(torch::randn({2, 10, 24}), ragged_mask({10, 4}, 10));
  EXPECT_EQ(y.sizes(), torch::IntArrayRef({2, 10, 24}));
  EXPECT_FALSE(mixer->is_causal());
  EXPECT_DOUBLE_EQ(mixer->flops(10), cerebra_flops(o, 10));

  EXPECT_THROW(with_own_options("cerebra", mo, {{"router_mode", "sometimes"}}), ConfigError);
  EXPECT_THROW(with_own_options("cerebra", mo, {{"windwo", "4"}}), ConfigError);
  mo.causal = true;
  EXPECT_THROW(make_mixer("cerebra", mo), c10::Error);
}

}  // namespace
}  // namespace cerebra
