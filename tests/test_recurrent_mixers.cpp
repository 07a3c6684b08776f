// The "rwkv" and "mamba2" sequence mixers: shapes, finite gradients, analytic FLOPs against the measured counter,
// causality, the padding mask, their own options, and the run-time switches that must not change results (RWKV's
// kernel vs reference WKV, Mamba-2's chunk size).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/mixer.h"
#include "kernel_test_util.h"

namespace {

using cerebra::MixerOptions;
using namespace cerebra::testing;
using torch::Tensor;

MixerOptions options(const std::string& mixer, int64_t d, std::map<std::string, std::string> own = {}) {
  MixerOptions o;
  o.d_model = d;
  o.n_heads = 4;
  o.causal = true;
  return cerebra::with_own_options(mixer, o, own);
}

// Measured forward FLOPs (RecordFunction counter + kernel reports) of B sequences against B · flops(n).
void expect_flops_match(cerebra::SequenceMixer& mixer, const Tensor& x) {
  torch::NoGradGuard guard;
  cerebra::FlopCounter counter;
  mixer.forward(x, {});
  const double analytic = static_cast<double>(x.size(0)) * mixer.flops(x.size(1));
  std::printf("  measured %.0f analytic %.0f\n", counter.total(), analytic);
  for (const auto& kv : counter.by_op()) std::printf("    %-28s %.0f\n", kv.first.c_str(), kv.second);
  EXPECT_GT(counter.total(), 0.0);
  EXPECT_NEAR(counter.total(), analytic, 0.01 * analytic);
}

// Changing token j leaves outputs before j untouched and changes output j.
void expect_causal(cerebra::SequenceMixer& mixer, int64_t d) {
  torch::NoGradGuard guard;
  const int64_t n = 20, j = 11;
  auto x = torch::randn({2, n, d});
  auto x2 = x.clone();
  x2.narrow(1, j, n - j).add_(torch::randn({2, n - j, d}));
  auto y = mixer.forward(x, {}), y2 = mixer.forward(x2, {});
  EXPECT_EQ(max_abs(y.narrow(1, 0, j) - y2.narrow(1, 0, j)), 0.0) << "outputs before the changed tokens moved";
  EXPECT_GT(max_abs(y.select(1, j) - y2.select(1, j)), 1e-6) << "output at the first changed token did not move";
}

// Values at padded positions (at the end and in the middle) do not reach real tokens; with padding only at the
// end, real outputs equal those of the unpadded shorter sequence.
void expect_mask_respected(cerebra::SequenceMixer& mixer, int64_t d) {
  torch::NoGradGuard guard;
  const int64_t n = 16, real = 10;
  auto x = torch::randn({2, n, d});
  auto mask = torch::ones({2, n}, torch::kBool);
  mask.narrow(1, real, n - real).fill_(false);
  mask[1][4] = false;  // a hole in the middle of batch 1
  auto x2 = x.clone();
  x2.masked_scatter_(mask.logical_not().unsqueeze(-1).expand_as(x2), 100 * torch::randn({2, n, d}));
  auto y = mixer.forward(x, mask), y2 = mixer.forward(x2, mask);
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  auto real_pos = mask.unsqueeze(-1).expand_as(y);
  const Diff dv = diff(y.masked_select(real_pos), y2.masked_select(real_pos));
  print_diff("real outputs, padded values changed", dv);
  EXPECT_LE(dv.max, 1e-5 * std::max(1.0, max_abs(y)));
  auto short_y = mixer.forward(x.narrow(1, 0, real).narrow(0, 0, 1), {});
  const Diff ds = diff(y[0].narrow(0, 0, real), short_y[0]);
  print_diff("padded vs unpadded sequence", ds);
  EXPECT_LE(ds.max, 1e-5 * std::max(1.0, max_abs(short_y)));
}

// Every parameter gets a finite gradient, and the input too.
void expect_finite_grads(cerebra::SequenceMixer& mixer, int64_t d) {
  auto x = torch::randn({2, 23, d}, torch::requires_grad());
  auto mask = torch::ones({2, 23}, torch::kBool);
  mask[1].narrow(0, 18, 5).fill_(false);
  auto y = mixer.forward(x, mask);
  (y * mask.unsqueeze(-1)).pow(2).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
  for (const auto& p : mixer.named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key() << " has no gradient";
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(max_abs(p.value().grad()), 0.0) << p.key() << " has an all-zero gradient";
  }
}

// Same parameters in `dst` as in `src` (same architecture).
void copy_parameters(cerebra::SequenceMixer& src, cerebra::SequenceMixer& dst) {
  torch::NoGradGuard guard;
  auto s = src.named_parameters(), d = dst.named_parameters();
  for (const auto& p : s) d[p.key()].copy_(p.value());
}

// ---- rwkv ----

TEST(RwkvMixer, ShapeFlopsAndReference) {
  torch::manual_seed(0);
  auto mixer = cerebra::make_mixer("rwkv", options("rwkv", 32));
  EXPECT_TRUE(mixer->is_causal());
  auto x = torch::randn({3, 37, 32});
  EXPECT_EQ(mixer->forward(x, {}).sizes(), x.sizes());
  expect_flops_match(*mixer, x);
  auto ref = cerebra::make_mixer("rwkv", options("rwkv", 32, {{"wkv_impl", "reference"}}));
  expect_flops_match(*ref, x);
  auto wide = cerebra::make_mixer("rwkv", options("rwkv", 32, {{"d_att", "48"}}));
  EXPECT_EQ(wide->forward(x, {}).sizes(), x.sizes());
  expect_flops_match(*wide, x);
}

TEST(RwkvMixer, FiniteGradients) {
  torch::manual_seed(1);
  auto mixer = cerebra::make_mixer("rwkv", options("rwkv", 16));
  expect_finite_grads(*mixer, 16);
}

TEST(RwkvMixer, IsCausal) {
  torch::manual_seed(2);
  auto mixer = cerebra::make_mixer("rwkv", options("rwkv", 16));
  expect_causal(*mixer, 16);
}

TEST(RwkvMixer, RespectsPaddingMask) {
  torch::manual_seed(3);
  auto mixer = cerebra::make_mixer("rwkv", options("rwkv", 16));
  expect_mask_respected(*mixer, 16);
}

TEST(RwkvMixer, KernelAndReferenceGiveSameOutputAndGradients) {
  torch::manual_seed(4);
  auto fast = cerebra::make_mixer("rwkv", options("rwkv", 16, {{"wkv_impl", "kernel"}}));
  auto ref = cerebra::make_mixer("rwkv", options("rwkv", 16, {{"wkv_impl", "reference"}}));
  copy_parameters(*fast, *ref);
  auto x = torch::randn({2, 25, 16});
  auto mask = torch::ones({2, 25}, torch::kBool);
  mask[1].narrow(0, 20, 5).fill_(false);
  for (const Tensor& m : {Tensor(), mask}) {
    auto y = fast->forward(x, m), y_ref = ref->forward(x, m);
    const Diff d = diff(y, y_ref);
    print_diff(m.defined() ? "output (masked)" : "output", d);
    EXPECT_LE(d.max, 1e-5 * std::max(1.0, max_abs(y_ref)));
    auto w = torch::randn_like(y);
    auto g = torch::autograd::grad({(y * w).sum()}, fast->parameters());
    auto g_ref = torch::autograd::grad({(y_ref * w).sum()}, ref->parameters());
    for (size_t i = 0; i < g.size(); ++i) {
      const Diff dg = diff(g[i], g_ref[i]);
      EXPECT_LE(dg.max, 1e-4 * std::max(1.0, max_abs(g_ref[i]))) << "parameter gradient " << i;
    }
  }
}

TEST(RwkvMixer, OwnOptions) {
  auto mixer = cerebra::make_mixer("rwkv", options("rwkv", 16, {{"d_att", "24"}}));
  const auto own = mixer->own_options();
  EXPECT_EQ(own.at("d_att").get<int64_t>(), 24);
  EXPECT_EQ(own.at("wkv_impl").get<std::string>(), "kernel");
  EXPECT_THROW(options("rwkv", 16, {{"d_attt", "24"}}), cerebra::ConfigError);
  EXPECT_THROW(options("rwkv", 16, {{"wkv_impl", "cuda"}}), cerebra::ConfigError);
}

// ---- mamba2 ----

TEST(Mamba2Mixer, ShapeAndFlops) {
  torch::manual_seed(5);
  auto mixer = cerebra::make_mixer("mamba2", options("mamba2", 32, {{"d_state", "8"}, {"head_dim", "16"}}));
  EXPECT_TRUE(mixer->is_causal());
  auto x = torch::randn({3, 37, 32});
  EXPECT_EQ(mixer->forward(x, {}).sizes(), x.sizes());
  expect_flops_match(*mixer, x);
  // Several chunks, the last one partial.
  auto chunked = cerebra::make_mixer("mamba2", options("mamba2", 32, {{"chunk_size", "16"}}));
  expect_flops_match(*chunked, x);
}

TEST(Mamba2Mixer, FiniteGradients) {
  torch::manual_seed(6);
  auto mixer = cerebra::make_mixer("mamba2", options("mamba2", 16, {{"chunk_size", "8"}}));
  expect_finite_grads(*mixer, 16);
}

TEST(Mamba2Mixer, IsCausal) {
  torch::manual_seed(7);
  auto mixer = cerebra::make_mixer("mamba2", options("mamba2", 16, {{"chunk_size", "8"}}));
  expect_causal(*mixer, 16);
}

TEST(Mamba2Mixer, RespectsPaddingMask) {
  torch::manual_seed(8);
  auto mixer = cerebra::make_mixer("mamba2", options("mamba2", 16, {{"chunk_size", "4"}}));
  expect_mask_respected(*mixer, 16);
}

TEST(Mamba2Mixer, ChunkSizeGivesSameOutputAndGradients) {
  torch::manual_seed(9);
  auto a = cerebra::make_mixer("mamba2", options("mamba2", 16, {{"chunk_size", "64"}}));
  auto b = cerebra::make_mixer("mamba2", options("mamba2", 16, {{"chunk_size", "5"}}));
  copy_parameters(*a, *b);
  auto x = torch::randn({2, 29, 16});
  auto ya = a->forward(x, {}), yb = b->forward(x, {});
  const Diff d = diff(ya, yb);
  print_diff("chunk 64 vs 5", d);
  EXPECT_LE(d.max, 1e-5 * std::max(1.0, max_abs(ya)));
  auto w = torch::randn_like(ya);
  auto ga = torch::autograd::grad({(ya * w).sum()}, a->parameters());
  auto gb = torch::autograd::grad({(yb * w).sum()}, b->parameters());
  for (size_t i = 0; i < ga.size(); ++i)
    EXPECT_LE(diff(ga[i], gb[i]).max, 1e-4 * std::max(1.0, max_abs(ga[i]))) << "parameter gradient " << i;
}

TEST(Mamba2Mixer, OwnOptions) {
  auto mixer = cerebra::make_mixer("mamba2", options("mamba2", 16, {{"d_state", "8"}}));
  const auto own = mixer->own_options();
  EXPECT_EQ(own.at("d_state").get<int64_t>(), 8);
  EXPECT_EQ(own.at("expand").get<int64_t>(), 2);
  EXPECT_EQ(own.at("head_dim").get<int64_t>(), 0);
  EXPECT_EQ(own.at("chunk_size").get<int64_t>(), 64);
  EXPECT_EQ(own.at("d_conv").get<int64_t>(), 4);
  // d_state 8: in_proj is d -> 2E + 2N + H = 64 + 16 + 4 (head_dim 0: E / n_heads = 8, so 4 heads).
  const auto params = mixer->named_parameters();
  EXPECT_EQ(params["in_proj.weight"].sizes(), torch::IntArrayRef({84, 16}));
  EXPECT_THROW(options("mamba2", 16, {{"d_sate", "8"}}), cerebra::ConfigError);
  EXPECT_THROW(options("mamba2", 16, {{"d_state", "eight"}}), cerebra::ConfigError);
  // head_dim must divide the inner width.
  EXPECT_THROW(cerebra::make_mixer("mamba2", options("mamba2", 16, {{"head_dim", "7"}})), c10::Error);
}

}  // namespace
