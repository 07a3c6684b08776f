// S4D (ops/s4d.h and the "s4d" mixer): the FFT convolution with the parameter-built kernel against the diagonal
// recurrence (outputs and every gradient, float64), the FLOPs it reports, and the mixer's shape, gradients,
// causality, padding, FLOPs and options.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/mixer.h"
#include "cerebra/ops/s4d.h"
#include "kernel_test_util.h"

namespace {

using namespace cerebra::testing;
using torch::Tensor;

struct Params {
  Tensor log_dt, log_A_real, A_imag, C;
  std::vector<Tensor> all() const { return {log_dt, log_A_real, A_imag, C}; }
};

// S4D-Lin-like parameters with some spread, float64 leaves.
Params make_params(int64_t H, int64_t M) {
  auto o = torch::TensorOptions().dtype(torch::kDouble);
  Params p{torch::rand({H}, o) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3),
           std::log(0.5) + 0.3 * torch::randn({H, M}, o), M_PI * torch::arange(M, o).repeat({H, 1}),
           torch::randn({H, M, 2}, o) * std::sqrt(0.5)};
  p.log_dt = (p.log_dt + 2.0).detach();  // larger steps (up to ~0.7) so the decays matter within a few dozen steps
  for (Tensor* t : {&p.log_dt, &p.log_A_real, &p.A_imag, &p.C}) t->requires_grad_();
  return p;
}

TEST(S4dKernel, FftConvolutionMatchesRecurrenceFloat64) {
  torch::manual_seed(0);
  for (int64_t L : {1, 7, 50}) {
    SCOPED_TRACE("L=" + std::to_string(L));
    auto p = make_params(5, 4);
    auto u = torch::randn({2, 5, L}, torch::kDouble).requires_grad_();
    auto gy = torch::randn({2, 5, L}, torch::kDouble);
    std::vector<Tensor> inputs = p.all();
    inputs.push_back(u);
    auto y = cerebra::ops::causal_conv_fft(u, cerebra::ops::s4d_kernel(p.log_dt, p.log_A_real, p.A_imag, p.C, L));
    auto y_ref = cerebra::ops::s4d_ref(u, p.log_dt, p.log_A_real, p.A_imag, p.C);
    expect_close_f64("y", y, y_ref, 1e-9);
    auto g = torch::autograd::grad({(y * gy).sum()}, inputs);
    auto g_ref = torch::autograd::grad({(y_ref * gy).sum()}, inputs);
    const char* names[] = {"dlog_dt", "dlog_A_real", "dA_imag", "dC", "du"};
    for (size_t i = 0; i < g.size(); ++i) expect_close_f64(names[i], g[i], g_ref[i], 1e-9);
  }
}

TEST(S4dKernel, ReportsFlops) {
  torch::manual_seed(1);
  auto u = torch::randn({3, 4, 20});
  auto K = torch::randn({4, 20});
  torch::NoGradGuard guard;
  cerebra::FlopCounter counter;
  cerebra::ops::causal_conv_fft(u, K);
  EXPECT_DOUBLE_EQ(counter.total(), cerebra::ops::s4d_conv_flops(3, 4, 20));
}

cerebra::MixerOptions options(int64_t d, std::map<std::string, std::string> own = {}) {
  cerebra::MixerOptions o;
  o.d_model = d;
  o.causal = true;
  return cerebra::with_own_options("s4d", o, own);
}

TEST(S4dMixer, ShapeFlopsAndGradients) {
  torch::manual_seed(2);
  auto mixer = cerebra::make_mixer("s4d", options(16, {{"d_state", "8"}}));
  EXPECT_TRUE(mixer->is_causal());
  auto x = torch::randn({3, 37, 16});
  {
    torch::NoGradGuard guard;
    cerebra::FlopCounter counter;
    EXPECT_EQ(mixer->forward(x, {}).sizes(), x.sizes());
    const double analytic = 3.0 * mixer->flops(37);
    for (const auto& kv : counter.by_op()) std::printf("    %-28s %.0f\n", kv.first.c_str(), kv.second);
    EXPECT_NEAR(counter.total(), analytic, 0.01 * analytic);
  }
  auto xg = x.clone().requires_grad_();
  mixer->forward(xg, {}).pow(2).sum().backward();
  EXPECT_TRUE(torch::isfinite(xg.grad()).all().item<bool>());
  for (const auto& p : mixer->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
}

// Every initialisation gives finite gradients (float32, as training runs), whatever the draw. (LibTorch 1.13's
// gelu_backward misread the gradient the head's transpose hands it; ops::gelu guards it, tests/test_activations.cpp.)
TEST(S4dMixer, GradientsFiniteForEveryInitialisation) {
  for (int seed = 0; seed < 40; ++seed) {
    torch::manual_seed(seed);
    auto mixer = cerebra::make_mixer("s4d", options(16));
    auto x = torch::randn({2, 29, 16}).requires_grad_();
    mixer->forward(x, {}).pow(2).sum().backward();
    EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>()) << "seed " << seed << " input";
    for (const auto& p : mixer->named_parameters())
      EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << "seed " << seed << " " << p.key();
  }
}

TEST(S4dMixer, CausalAndPadding) {
  torch::manual_seed(3);
  auto mixer = cerebra::make_mixer("s4d", options(8));
  torch::NoGradGuard guard;
  const int64_t n = 16, j = 9, real = 10;
  auto x = torch::randn({2, n, 8});
  auto x2 = x.clone();
  x2.narrow(1, j, n - j).add_(torch::randn({2, n - j, 8}));
  auto y = mixer->forward(x, {}), y2 = mixer->forward(x2, {});
  // FFT rounding reaches every output: "unchanged" up to float rounding.
  EXPECT_LE(max_abs(y.narrow(1, 0, j) - y2.narrow(1, 0, j)), 1e-5 * std::max(1.0, max_abs(y)));
  EXPECT_GT(max_abs(y.select(1, j) - y2.select(1, j)), 1e-3);
  auto mask = torch::ones({2, n}, torch::kBool);
  mask.narrow(1, real, n - real).fill_(false);
  mask[1][4] = false;
  auto x3 = x.clone();
  x3.masked_scatter_(mask.logical_not().unsqueeze(-1).expand_as(x3), 100 * torch::randn({2, n, 8}));
  auto ym = mixer->forward(x, mask), ym3 = mixer->forward(x3, mask);
  auto real_pos = mask.unsqueeze(-1).expand_as(ym);
  EXPECT_LE(diff(ym.masked_select(real_pos), ym3.masked_select(real_pos)).max, 1e-5 * std::max(1.0, max_abs(ym)));
  auto short_y = mixer->forward(x.narrow(1, 0, real).narrow(0, 0, 1), {});
  EXPECT_LE(diff(ym[0].narrow(0, 0, real), short_y[0]).max, 1e-5 * std::max(1.0, max_abs(short_y)));
}

TEST(S4dMixer, OwnOptions) {
  auto mixer = cerebra::make_mixer("s4d", options(8, {{"d_state", "8"}}));
  EXPECT_EQ(mixer->own_options().at("d_state").get<int64_t>(), 8);
  EXPECT_EQ(mixer->named_parameters()["C"].sizes(), torch::IntArrayRef({8, 4, 2}));
  EXPECT_THROW(options(8, {{"d_sate", "8"}}), cerebra::ConfigError);
  EXPECT_THROW(cerebra::make_mixer("s4d", options(8, {{"d_state", "7"}})), c10::Error);
}

}  // namespace
