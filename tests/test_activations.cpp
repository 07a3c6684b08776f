// ops::gelu: the exact GELU whose gradient is right whatever the layout of the incoming gradient (LibTorch 1.13's
// CPU gelu_backward reads a gradient laid out unlike its contiguous float input in the wrong order).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "cerebra/ops/activations.h"
#include "kernel_test_util.h"

namespace {

using namespace cerebra::testing;
using torch::Tensor;

// d/dx GELU(x) = Φ(x) + x·φ(x), from plain torch ops.
Tensor gelu_derivative_ref(const Tensor& x) {
  const auto cdf = 0.5 * (1 + torch::erf(x / std::sqrt(2.0)));
  const auto pdf = torch::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
  return cdf + x * pdf;
}

// A GELU on a (B, H, n) tensor, transposed to (B, n, H) and fed to a linear map: the gradient reaches the GELU
// contiguous in (B, n, H) order, unlike its input (the S4D mixer's head, the case that broke training).
TEST(Gelu, GradientRightForAnyLayoutOfTheIncomingGradient) {
  torch::manual_seed(0);
  const int64_t B = 8, H = 16, n = 24;
  auto x = torch::randn({B, H, n}).requires_grad_();
  auto W = torch::randn({2 * H, H});
  auto y = cerebra::ops::gelu(x);
  EXPECT_TRUE(torch::equal(y, torch::gelu(x.detach())));
  auto out = torch::matmul(y.transpose(1, 2), W.t());  // (B, n, 2H)
  auto gout = torch::randn_like(out);
  auto gx = torch::autograd::grad({out}, {x}, {gout})[0];
  // The gradient the GELU receives, (B, H, n): (gout · W)ᵀ; the chain rule gives gx = that ∘ GELU'(x).
  auto g_in = torch::matmul(gout, W).transpose(1, 2);
  auto expected = g_in * gelu_derivative_ref(x.detach());
  EXPECT_TRUE(torch::isfinite(gx).all().item<bool>());
  EXPECT_LE(max_abs(gx - expected), 1e-4 * std::max(1.0, max_abs(expected)));
}

// The contiguous case is untouched: the same numbers as torch::gelu's own backward.
TEST(Gelu, ContiguousGradientMatchesTorch) {
  torch::manual_seed(1);
  auto x = torch::randn({4, 33}).requires_grad_();
  auto g = torch::randn({4, 33});
  auto ours = torch::autograd::grad({cerebra::ops::gelu(x)}, {x}, {g})[0];
  auto theirs = torch::autograd::grad({torch::gelu(x)}, {x}, {g})[0];
  EXPECT_TRUE(torch::equal(ours, theirs));
}

}  // namespace
