// Recurrent step() of the state-keeping causal mixers (lstm, cnn, mamba, mamba2, rwkv, s4d) in the cases the
// generation tests do not reach: prompts shorter than a convolution's kernel, chunks longer than a scan or SSD chunk
// after a state has been carried, the reference operators, pruned convolutions, and a state that keeps its size.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "cerebra/models/mixer.h"
#include "step_test_util.h"

namespace {
using namespace cerebra;

using test::causal_mixer;

// max |step - forward| over x (B, n, d) stepped in the given chunks (summing to n) from a fresh state.
double step_error(SequenceMixer& mixer, const torch::Tensor& x, const std::vector<int64_t>& chunks) {
  MixerState state;
  return test::expect_steps_like_forward(mixer, x, chunks, state);
}

struct Case {
  std::string mixer;
  std::map<std::string, std::string> own;
  std::vector<int64_t> chunks;
};

TEST(RecurrentStep, StepsLikeTheFullForwardInEveryCase) {
  torch::NoGradGuard no_grad;
  const std::vector<Case> cases{
      // Prompts shorter than the convolutions' kernels, then tokens one by one across the kernel's reach.
      {"mamba", {{"d_conv", "4"}}, {1, 1, 1, 1, 1, 2}},
      {"mamba2", {{"d_conv", "4"}}, {2, 1, 1, 1, 1, 1}},
      {"cnn", {{"kernel_size", "5"}, {"cnn_depth", "3"}}, {1, 2, 1, 3, 1, 1, 8, 1, 14}},
      {"cnn", {{"kernel_size", "1"}, {"cnn_depth", "2"}}, {1, 3, 2}},
      // Chunks longer than the scan's and the SSD's chunks after the state has seen tokens.
      {"mamba", {}, {3, 150, 1, 70}},
      {"mamba", {{"scan_impl", "reference"}}, {5, 1, 40}},
      {"mamba2", {{"chunk_size", "4"}}, {3, 1, 17, 9, 1}},
      {"mamba2", {}, {3, 130, 2}},
      {"rwkv", {{"wkv_impl", "reference"}}, {1, 20, 1, 5}},
      {"rwkv", {{"d_att", "24"}}, {4, 1, 30}},
      {"s4d", {{"d_state", "2"}}, {1, 9, 1}},
      {"s4d", {}, {7, 120, 1, 1, 40}},
      {"lstm", {}, {1, 60, 2}},
  };
  for (const auto& c : cases) {
    const int64_t n = std::accumulate(c.chunks.begin(), c.chunks.end(), int64_t{0});
    for (int64_t B : {1, 3}) {
      SCOPED_TRACE(c.mixer + " B=" + std::to_string(B) + " n=" + std::to_string(n));
      torch::manual_seed(11);
      auto mixer = causal_mixer(c.mixer, c.own);
      mixer->eval();
      EXPECT_TRUE(mixer->has_recurrent_step());
      auto x = torch::randn({B, n, 16});
      const double err = step_error(*mixer, x, c.chunks);
      EXPECT_LT(err, 1e-4);
    }
  }
}

TEST(RecurrentStep, PrunedConvolutionsStepLikeTheirForward) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(2);
  auto mixer = causal_mixer("cnn", {{"kernel_size", "3"}, {"cnn_depth", "2"}});
  mixer->eval();
  mixer->prune_units(0, {0, 3, 5, 9});
  mixer->prune_units(1, {1, 2, 15});
  EXPECT_LT(step_error(*mixer, torch::randn({2, 25, 16}), {1, 1, 10, 1, 12}), 1e-4);
}

TEST(RecurrentStep, StatesKeepTheirSizeAndBatch) {
  torch::NoGradGuard no_grad;
  for (const std::string name : {"lstm", "cnn", "mamba", "mamba2", "rwkv", "s4d"}) {
    SCOPED_TRACE(name);
    auto mixer = causal_mixer(name, {});
    mixer->eval();
    MixerState state;
    mixer->step(torch::randn({3, 1, 16}), state);
    const int64_t at1 = state.bytes();
    EXPECT_GT(at1, 0);
    mixer->step(torch::randn({3, 100, 16}), state);
    EXPECT_EQ(state.bytes(), at1);
    for (const auto& [key, t] : state.tensors) EXPECT_EQ(t.size(0), 3) << key;
    EXPECT_THROW(mixer->step(torch::randn({2, 1, 16}), state), c10::Error);  // another batch than the state's
  }
}

TEST(RecurrentStep, StepKeepsGradientsInTrainingMode) {
  for (const std::string name : {"lstm", "cnn", "mamba", "mamba2", "rwkv", "s4d"}) {
    SCOPED_TRACE(name);
    torch::manual_seed(4);
    auto mixer = causal_mixer(name, {});
    mixer->train();
    MixerState state;
    auto x = torch::randn({2, 9, 16}, torch::requires_grad());
    auto y = torch::cat({mixer->step(x.slice(1, 0, 4), state), mixer->step(x.slice(1, 4, 9), state)}, 1);
    y.pow(2).sum().backward();
    ASSERT_TRUE(x.grad().defined());
    EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
    EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
  }
}

}  // namespace
