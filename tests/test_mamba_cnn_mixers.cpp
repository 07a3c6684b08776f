// The "mamba" and "cnn" sequence mixers: shapes, analytic FLOPs against the measured counter, causality, the
// padding mask, and Mamba's run-time switch between the scan kernel and its reference.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cerebra/core/flop_counter.h"
#include "cerebra/models/mixer.h"
#include "kernel_test_util.h"

namespace {

using cerebra::MixerOptions;
using namespace cerebra::testing;
using torch::Tensor;

// Common options with the mixer's own options set from text, as a config would set them.
MixerOptions options(const std::string& mixer, int64_t d, bool causal, std::map<std::string, std::string> own = {}) {
  MixerOptions o;
  o.d_model = d;
  o.causal = causal;
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
  EXPECT_NEAR(counter.total(), analytic, 0.05 * analytic);
}

// Changing token j leaves outputs before j untouched and changes output j.
void expect_causal(cerebra::SequenceMixer& mixer, int64_t d) {
  torch::NoGradGuard guard;
  const int64_t n = 20, j = 11;
  auto x = torch::randn({2, n, d});
  auto x2 = x.clone();
  x2.select(1, j).add_(torch::randn({2, d}));
  auto y = mixer.forward(x, {}), y2 = mixer.forward(x2, {});
  EXPECT_EQ(max_abs(y.narrow(1, 0, j) - y2.narrow(1, 0, j)), 0.0) << "outputs before the changed token moved";
  EXPECT_GT(max_abs(y.select(1, j) - y2.select(1, j)), 1e-6) << "output at the changed token did not move";
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
  auto real_pos = mask.unsqueeze(-1).expand_as(y);
  const Diff dv = diff(y.masked_select(real_pos), y2.masked_select(real_pos));
  print_diff("real outputs, padded values changed", dv);
  EXPECT_LE(dv.max, 1e-5 * std::max(1.0, max_abs(y)));
  auto short_y = mixer.forward(x.narrow(1, 0, real).narrow(0, 0, 1), {});
  const Diff ds = diff(y[0].narrow(0, 0, real), short_y[0]);
  print_diff("padded vs unpadded sequence", ds);
  EXPECT_LE(ds.max, 1e-5 * std::max(1.0, max_abs(short_y)));
}

TEST(MambaMixer, ShapeAndFlops) {
  torch::manual_seed(0);
  auto mixer = cerebra::make_mixer("mamba", options("mamba", 32, true, {{"d_state", "8"}}));
  EXPECT_TRUE(mixer->is_causal());
  auto x = torch::randn({3, 37, 32});
  EXPECT_EQ(mixer->forward(x, {}).sizes(), x.sizes());
  expect_flops_match(*mixer, x);
  auto ref = cerebra::make_mixer("mamba", options("mamba", 32, true, {{"d_state", "8"}, {"scan_impl", "reference"}}));
  expect_flops_match(*ref, x);
}

TEST(MambaMixer, IsCausal) {
  torch::manual_seed(1);
  auto mixer = cerebra::make_mixer("mamba", options("mamba", 16, true));
  expect_causal(*mixer, 16);
}

TEST(MambaMixer, RespectsPaddingMask) {
  torch::manual_seed(2);
  auto mixer = cerebra::make_mixer("mamba", options("mamba", 16, true));
  expect_mask_respected(*mixer, 16);
}

TEST(MambaMixer, ScanImplSwitchGivesSameOutputAndGradients) {
  torch::manual_seed(3);
  auto fast = cerebra::make_mixer("mamba", options("mamba", 16, true, {{"scan_impl", "kernel"}}));
  auto ref = cerebra::make_mixer("mamba", options("mamba", 16, true, {{"scan_impl", "reference"}}));
  {
    torch::NoGradGuard guard;
    auto src = fast->named_parameters(), dst = ref->named_parameters();
    for (const auto& p : src) dst[p.key()].copy_(p.value());
  }
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

TEST(CnnMixer, ShapeAndFlops) {
  torch::manual_seed(4);
  for (bool causal : {false, true}) {
    auto mixer = cerebra::make_mixer("cnn", options("cnn", 24, causal, {{"kernel_size", "3"}, {"cnn_depth", "3"}}));
    EXPECT_EQ(mixer->is_causal(), causal);
    auto x = torch::randn({2, 29, 24});
    EXPECT_EQ(mixer->forward(x, {}).sizes(), x.sizes());
    expect_flops_match(*mixer, x);
  }
}

TEST(CnnMixer, CausalOnlyWhenAsked) {
  torch::manual_seed(5);
  auto causal = cerebra::make_mixer("cnn", options("cnn", 8, true));
  expect_causal(*causal, 8);
  // Non-causal: the output just before a changed token moves.
  auto open = cerebra::make_mixer("cnn", options("cnn", 8, false));
  torch::NoGradGuard guard;
  auto x = torch::randn({1, 12, 8});
  auto x2 = x.clone();
  x2.select(1, 6).add_(1.0);
  EXPECT_GT(max_abs(open->forward(x, {}).select(1, 5) - open->forward(x2, {}).select(1, 5)), 1e-6);
}

TEST(CnnMixer, RespectsPaddingMask) {
  torch::manual_seed(6);
  for (bool causal : {true, false}) {
    auto mixer = cerebra::make_mixer("cnn", options("cnn", 8, causal));
    torch::NoGradGuard guard;
    // The hole at position 4 also changes what the neighbours see (zeros instead of values), so only the
    // "padded values do not leak" part applies there; compare against the shorter sequence with end padding only.
    const int64_t n = 16, real = 10;
    auto x = torch::randn({2, n, 8});
    auto mask = torch::ones({2, n}, torch::kBool);
    mask.narrow(1, real, n - real).fill_(false);
    mask[1][4] = false;
    auto x2 = x.clone();
    x2.masked_scatter_(mask.logical_not().unsqueeze(-1).expand_as(x2), 100 * torch::randn({2, n, 8}));
    auto y = mixer->forward(x, mask), y2 = mixer->forward(x2, mask);
    auto real_pos = mask.unsqueeze(-1).expand_as(y);
    EXPECT_LE(diff(y.masked_select(real_pos), y2.masked_select(real_pos)).max, 1e-5 * std::max(1.0, max_abs(y)));
    auto short_y = mixer->forward(x.narrow(1, 0, real).narrow(0, 0, 1), {});
    const Diff ds = diff(y[0].narrow(0, 0, real), short_y[0]);
    print_diff(causal ? "causal: padded vs unpadded" : "same: padded vs unpadded", ds);
    EXPECT_LE(ds.max, 1e-5 * std::max(1.0, max_abs(short_y)));
  }
}

}  // namespace
