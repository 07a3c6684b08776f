// The "attention" sequence mixer's two implementations (attention_impl naive | tiled): same output and gradients
// with and without padding and causality, and the analytic FLOPs against the measured counter.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cerebra/core/flop_counter.h"
#include "cerebra/models/mixer.h"
#include "kernel_test_util.h"

namespace {

using cerebra::MixerOptions;
using namespace cerebra::testing;
using torch::Tensor;

MixerOptions options(int64_t d, int64_t heads, bool causal, const std::string& impl) {
  MixerOptions o;
  o.d_model = d;
  o.n_heads = heads;
  o.causal = causal;
  return cerebra::with_own_options("attention", o, {{"attention_impl", impl}});
}

// A naive and a tiled mixer holding the same parameters.
std::pair<std::shared_ptr<cerebra::SequenceMixer>, std::shared_ptr<cerebra::SequenceMixer>> twin_mixers(
    int64_t d, int64_t heads, bool causal) {
  auto naive = cerebra::make_mixer("attention", options(d, heads, causal, "naive"));
  auto tiled = cerebra::make_mixer("attention", options(d, heads, causal, "tiled"));
  torch::NoGradGuard guard;
  auto src = naive->named_parameters(), dst = tiled->named_parameters();
  for (const auto& p : src) dst[p.key()].copy_(p.value());
  return {naive, tiled};
}

double forward_flops(cerebra::SequenceMixer& mixer, const Tensor& x) {
  torch::NoGradGuard guard;
  cerebra::FlopCounter counter;
  mixer.forward(x, {});
  for (const auto& kv : counter.by_op()) std::printf("    %-28s %.0f\n", kv.first.c_str(), kv.second);
  return counter.total();
}

TEST(AttentionMixer, TiledMatchesNaiveOutputAndInputGradient) {
  const int64_t B = 2, n = 300, d = 32, heads = 4;  // n spans several query and key tiles
  for (bool causal : {false, true}) {
    torch::manual_seed(causal ? 11 : 7);
    auto [naive, tiled] = twin_mixers(d, heads, causal);
    auto mask = torch::ones({B, n}, torch::kBool);
    mask[1].narrow(0, 250, n - 250).fill_(false);  // padding at the end
    mask[1][3] = false;                            // and a hole
    mask[0][0] = false;  // causal: query 0 of sequence 0 has no key left (zeros, no NaN)
    for (const Tensor& m : {Tensor(), mask}) {
      SCOPED_TRACE(std::string(causal ? "causal" : "non-causal") + (m.defined() ? ", masked" : ", no mask"));
      auto x = torch::randn({B, n, d}).requires_grad_();
      auto x2 = x.detach().clone().requires_grad_();
      auto y = naive->forward(x, m), y2 = tiled->forward(x2, m);
      auto w = torch::randn_like(y);
      if (m.defined()) w = w * m.unsqueeze(-1).to(w.dtype());  // callers never read padded outputs
      const Diff dy = diff(y * (w != 0), y2 * (w != 0));
      print_diff("output", dy);
      EXPECT_LE(dy.max, 1e-5 * std::max(1.0, max_abs(y)));
      EXPECT_FALSE(torch::isnan(y2).any().item<bool>());
      auto gx = torch::autograd::grad({(y * w).sum()}, {x})[0];
      auto gx2 = torch::autograd::grad({(y2 * w).sum()}, {x2})[0];
      const Diff dg = diff(gx, gx2);
      print_diff("input gradient", dg);
      EXPECT_LE(dg.max, 1e-4 * std::max(1.0, max_abs(gx)));
      EXPECT_GT(max_abs(gx), 1e-3);  // the comparison is not vacuous
    }
  }
}

TEST(AttentionMixer, MeasuredFlopsMatchAnalytic) {
  torch::manual_seed(5);
  const int64_t B = 2, n = 300, d = 32;
  auto x = torch::randn({B, n, d});
  for (const char* impl : {"naive", "tiled"}) {
    auto mixer = cerebra::make_mixer("attention", options(d, 4, false, impl));
    const double measured = forward_flops(*mixer, x), analytic = B * mixer->flops(n);
    std::printf("  %s non-causal: measured %.0f analytic %.0f\n", impl, measured, analytic);
    EXPECT_NEAR(measured, analytic, 0.05 * analytic) << impl;
  }
  // Causal tiled: flops(n) counts the tiles the kernel runs (about half the score work), exactly.
  auto causal = cerebra::make_mixer("attention", options(d, 4, true, "tiled"));
  const double measured = forward_flops(*causal, x), analytic = B * causal->flops(n);
  std::printf("  tiled causal: measured %.0f analytic %.0f\n", measured, analytic);
  EXPECT_NEAR(measured, analytic, 1e-9 * analytic);
  EXPECT_LT(causal->flops(n), cerebra::make_mixer("attention", options(d, 4, false, "tiled"))->flops(n));
}

TEST(AttentionMixer, RejectsUnknownImplementation) {
  try {
    cerebra::make_mixer("attention", options(32, 4, false, "flash"));
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("auto, naive, tiled"), std::string::npos) << e.what();
  }
}

}  // namespace
