// Adaptive routing (each sequence routes what its gates decide, packed across the batch) and Mixture-of-Depths
// skipping (unrouted = skip: an unselected token runs neither the full attention nor the feed-forward).
#include <gtest/gtest.h>
#include <cmath>
#include <torch/torch.h>

#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/cerebra_layer.h"
#include "cerebra/models/models.h"

namespace cerebra {
namespace {

CerebraOptions small(RoutingMode mode, Unrouted unrouted) {
  CerebraOptions o;
  o.d_model = 16;
  o.n_heads = 2;
  o.mode = mode;
  o.unrouted = unrouted;
  o.k_max = 1000;
  o.window = 4;
  o.memory_max = 4;
  o.gumbel = RouterNoise::kOff;
  return o;
}

// A padded batch of 3 sequences of lengths 20, 13, 7.
std::pair<torch::Tensor, torch::Tensor> batch() {
  torch::manual_seed(3);
  auto x = torch::randn({3, 20, 16});
  auto mask = torch::ones({3, 20}, torch::kBool);
  mask[1].slice(0, 13).fill_(false);
  mask[2].slice(0, 7).fill_(false);
  return {x, mask};
}

// The readout token of a feature-token model is always selected, whatever its gate; nothing else changes.
TEST(CerebraAdaptive, TheReadoutTokenIsAlwaysRouted) {
  torch::manual_seed(5);
  auto x = torch::randn({4, 9, 16});
  for (RoutingMode mode : {RoutingMode::kAdaptive, RoutingMode::kThreshold, RoutingMode::kTopK}) {
    CerebraOptions o = small(mode, Unrouted::kSkip);
    o.topk = 2;
    o.route_last = true;
    CerebraLayer layer(o);
    {
      torch::NoGradGuard g;
      layer.router->score->bias.fill_(-20.0);  // every gate ~0: nothing would be routed
      layer.router->score->weight[0][0] = 1.0;
    }
    layer.eval();
    torch::NoGradGuard g;
    layer.forward(x, torch::Tensor());
    auto sel = layer.last_selected();
    EXPECT_TRUE(sel.select(1, 8).all().item<bool>()) << to_string(mode);
    if (mode != RoutingMode::kTopK)
      EXPECT_EQ(sel.sum().item<int64_t>(), 4) << to_string(mode);
    else
      EXPECT_EQ(sel.sum().item<int64_t>(), 8);
  }
}

TEST(CerebraAdaptive, PackedFullPathEqualsThresholdWithoutCap) {
  auto [x, mask] = batch();
  torch::manual_seed(11);
  CerebraLayer adaptive(small(RoutingMode::kAdaptive, Unrouted::kCompressed));
  torch::manual_seed(11);
  CerebraLayer threshold(small(RoutingMode::kThreshold, Unrouted::kCompressed));
  adaptive.eval();
  threshold.eval();
  torch::NoGradGuard g;
  adaptive.router->score->bias.copy_(threshold.router->score->bias);  // adaptive starts dense (kDenseStartBias)
  auto ya = adaptive.forward(x, mask), yt = threshold.forward(x, mask);
  auto real = mask.unsqueeze(-1);
  EXPECT_TRUE(torch::allclose(ya.masked_fill(real.logical_not(), 0), yt.masked_fill(real.logical_not(), 0), 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(adaptive.last_selected(), threshold.last_selected()));
  // Packed: no padding rows on the full path, so never more work than the rectangular blocks.
  EXPECT_LE(adaptive.realised_flops(), threshold.realised_flops());
  const auto counts = adaptive.last_selected().sum(1);
  EXPECT_GT(counts.max().item<int64_t>(), counts.min().item<int64_t>()) << "the test needs unequal routed counts";
  // What ran is what the layer reports: the packed full path over each sequence's real tokens (20, 13, 7 keys, not
  // the padded 20), plus the compressed path.
  double measured = 0;
  {
    FlopCounter counter;
    adaptive.forward(x, mask);
    measured = counter.total();
  }
  EXPECT_NEAR(measured, adaptive.realised_flops(), 1e-9 * measured);
}

TEST(CerebraAdaptive, SkippedTokensGetNothingAndRunNoFeedForward) {
  auto [x, mask] = batch();
  for (double bias : {-10.0, 0.0, 10.0}) {  // nothing, about half, everything routed
    torch::manual_seed(5);
    BackboneOptions bo;
    bo.mixer = "cerebra";
    bo.mixer_options.d_model = 16;
    bo.mixer_options.n_heads = 2;
    bo.mixer_options.own = small(RoutingMode::kAdaptive, Unrouted::kSkip);
    bo.n_layers = 1;
    bo.ffn_mult = 2;
    Backbone net(bo);
    net->eval();
    auto layer = std::dynamic_pointer_cast<CerebraLayer>(net->mixers()[0]);
    ASSERT_TRUE(layer && layer->owns_feedforward());
    torch::NoGradGuard g;
    layer->router->score->bias.fill_(bias);
    double measured = 0;
    {
      FlopCounter counter;
      net->forward(x, mask);
      measured = counter.total();
    }
    // Everything that ran is the layer's (router, routed rows, their output rows and feed-forward).
    EXPECT_NEAR(measured, layer->realised_flops(), 1e-9 * measured + 1e-6) << "bias " << bias;
    // Per sequence (the sampler's Ĉ): the parts sum to the whole, and with every token routed a longer sequence
    // (20 > 13 > 7 real tokens) ran more work.
    const std::vector<double> per = layer->realised_flops_per_sequence();
    ASSERT_EQ(per.size(), 3u);
    EXPECT_NEAR(per[0] + per[1] + per[2], layer->realised_flops(), 1e-9 * measured + 1e-6);
    if (bias > 0) EXPECT_TRUE(per[0] > per[1] && per[1] > per[2]) << per[0] << " " << per[1] << " " << per[2];
    const int64_t routed = layer->last_selected().sum().item<int64_t>();
    const double router = 3.0 * 2.0 * 20 * 16;
    if (bias < 0) EXPECT_EQ(measured, router) << "no token routed: only the router runs";
    if (bias > 0) EXPECT_EQ(routed, mask.sum().item<int64_t>()) << "every real token routed";
    // An unselected token's mixer output is exactly zero (it keeps its residual).
    auto y = layer->forward(x, mask);
    auto unselected = layer->last_selected().logical_not().logical_and(mask);
    EXPECT_EQ(y.index({unselected}).abs().sum().item<double>(), 0.0);
  }
}

// Mixture-of-Depths: a selected token's block output is scaled by its gate. With every token selected at two router
// biases, the outputs differ exactly by the ratio of the gates (the attention among the same tokens is unchanged).
TEST(CerebraAdaptive, SkipScalesEachSelectedOutputByItsGate) {
  auto [x, mask] = batch();
  torch::manual_seed(9);
  CerebraLayer layer(small(RoutingMode::kAdaptive, Unrouted::kSkip));
  layer.eval();
  torch::NoGradGuard ng;
  auto run = [&](double bias) {
    layer.router->score->bias.fill_(bias);
    auto y = layer.forward(x, mask);
    EXPECT_TRUE(layer.last_selected().eq(mask).all().item<bool>()) << "every real token selected at bias " << bias;
    return std::make_pair(y, layer.last_gates().clone());
  };
  auto [y_hi, g_hi] = run(12.0);
  auto [y_lo, g_lo] = run(0.5);
  ASSERT_LT(g_lo.index({mask}).max().item<double>(), 0.8);
  auto want = y_hi * (g_lo / g_hi).unsqueeze(-1);
  EXPECT_TRUE(torch::allclose(y_lo.index({mask}), want.index({mask}), 1e-4, 1e-6))
      << "max |diff| " << (y_lo - want).index({mask}).abs().max().item<double>();
}

// Adaptive routing starts dense: under the training noise a fresh router selects σ(3) ≈ 95% of the real tokens
// (from a zero bias half of them would be dropped at random before the blocks learn anything).
TEST(CerebraAdaptive, StartsDense) {
  torch::manual_seed(12);
  CerebraOptions o = small(RoutingMode::kAdaptive, Unrouted::kSkip);
  o.gumbel = RouterNoise::kOn;
  CerebraLayer layer(o);
  layer.train();
  auto x = torch::randn({8, 200, 16});
  auto mask = torch::ones({8, 200}, torch::kBool);
  layer.forward(x, mask);
  const double share = layer.last_selected().to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(share, 1.0 / (1.0 + std::exp(-kDenseStartBias)), 0.02);
}

TEST(CerebraAdaptive, GradientsReachTheRouter) {
  auto [x, mask] = batch();
  for (Unrouted u : {Unrouted::kCompressed, Unrouted::kSkip}) {
    torch::manual_seed(7);
    CerebraLayer layer(small(RoutingMode::kAdaptive, u));
    layer.train();
    auto y = layer.forward(x, mask);
    (y.pow(2) * mask.unsqueeze(-1)).sum().backward();
    auto g = layer.router->score->weight.grad();
    ASSERT_TRUE(g.defined());
    EXPECT_TRUE(g.isfinite().all().item<bool>());
    EXPECT_GT(g.abs().sum().item<double>(), 0.0) << (u == Unrouted::kSkip ? "skip" : "compressed");
  }
}

// k_min: when every gate has fallen under 0.5, the k_min best-scored real tokens of each sequence still take the
// full path (all of a shorter sequence), so the task loss still reaches the router; without it nothing is routed
// and the router gets no gradient from the task.
TEST(CerebraAdaptive, AFloorKeepsTheBestTokensRoutedAndTheRouterLearning) {
  auto [x, mask] = batch();  // lengths 20, 13, 7
  for (RoutingMode mode : {RoutingMode::kAdaptive, RoutingMode::kThreshold}) {
    for (int64_t k_min : {0, 9}) {
      SCOPED_TRACE(to_string(mode) + " k_min " + std::to_string(k_min));
      torch::manual_seed(7);
      CerebraOptions o = small(mode, Unrouted::kSkip);
      o.k_min = k_min;
      CerebraLayer layer(o);
      {
        torch::NoGradGuard g;
        layer.router->score->bias.fill_(-8.0);  // every gate far under 0.5
      }
      layer.train();
      auto y = layer.forward(x, mask);
      const auto sel = layer.last_selected();
      std::vector<int64_t> counts;
      for (int64_t b = 0; b < 3; ++b) counts.push_back(sel[b].sum().item<int64_t>());
      const std::vector<int64_t> want = k_min == 0 ? std::vector<int64_t>{0, 0, 0} : std::vector<int64_t>{9, 9, 7};
      EXPECT_EQ(counts, want);
      if (k_min > 0) {  // the selected tokens are the best-scored real tokens of their sequence
        auto z = layer.router->score->forward(x).squeeze(-1).detach().masked_fill(mask.logical_not(), -1e30);
        for (int64_t b = 0; b < 3; ++b) {
          const double lowest_selected = z[b].masked_select(sel[b]).min().item<double>();
          const auto unselected = z[b].masked_select(sel[b].logical_not().logical_and(mask[b]));
          if (unselected.numel() > 0) EXPECT_GE(lowest_selected, unselected.max().item<double>());
        }
      }
      double grad = 0.0;  // nothing routed: y is x itself, no parameter is in its graph
      if (y.requires_grad()) {
        (y.pow(2) * mask.unsqueeze(-1)).sum().backward();
        const auto g = layer.router->score->weight.grad();
        grad = g.defined() ? g.abs().sum().item<double>() : 0.0;
      }
      if (k_min == 0) EXPECT_EQ(grad, 0.0);
      else EXPECT_GT(grad, 0.0);
    }
  }
  CerebraOptions o = small(RoutingMode::kThreshold, Unrouted::kSkip);
  o.k_max = 4;
  o.k_min = 5;
  EXPECT_THROW(CerebraLayer{o}, c10::Error);  // a floor above the cap
}

// unrouted: auto (the default) skips unrouted tokens under adaptive routing and keeps the compressed path for the
// fixed-count modes; an explicit value wins.
TEST(CerebraAdaptive, UnroutedAutoSkipsUnderAdaptiveRouting) {
  auto unrouted = [](const std::string& mode, const std::string& value) {
    Config c;
    c.set("router_mode", mode, "test");
    if (!value.empty()) c.set("unrouted", value, "test");
    return CerebraOptions::from_config(c).unrouted;
  };
  EXPECT_EQ(unrouted("adaptive", ""), Unrouted::kSkip);
  EXPECT_EQ(unrouted("topk", ""), Unrouted::kCompressed);
  EXPECT_EQ(unrouted("soft", ""), Unrouted::kCompressed);
  EXPECT_EQ(unrouted("adaptive", "compressed"), Unrouted::kCompressed);
  EXPECT_EQ(unrouted("topk", "skip"), Unrouted::kSkip);
}

TEST(CerebraAdaptive, SkipNeedsAHardRouterMode) {
  CerebraOptions o = small(RoutingMode::kSoft, Unrouted::kSkip);
  try {
    CerebraLayer layer(o);
    FAIL() << "soft routing with unrouted = skip must be refused";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unrouted = skip"), std::string::npos);
  }
}

}  // namespace
}  // namespace cerebra
