// Causal generation of the attention-family mixers in their non-default modes: step() in chunks equals the full
// causal forward (attention's tiled core, longformer's dilation and global-token counts, performer with redraw,
// AFT-full and AFT-local), and each state has the size its header comment gives.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "cerebra/models/mixer.h"
#include "step_test_util.h"

namespace {
using namespace cerebra;

using test::causal_mixer;
using test::expect_steps_like_forward;

const std::vector<int64_t> kChunks{1, 1, 17, 3, 1, 23};  // 46 tokens

TEST(AttentionStep, TiledAndNaiveCoresStepLikeTheirForward) {
  for (const char* impl : {"naive", "tiled", "auto"}) {
    SCOPED_TRACE(impl);
    torch::manual_seed(11);
    auto mixer = causal_mixer("attention", {{"attention_impl", impl}});
    // 80 tokens: auto runs the tiled kernel in forward (>= 64 tokens); one chunk alone is longer than 64.
    auto state = expect_steps_like_forward(*mixer, torch::randn({2, 80, 16}), {1, 2, 70, 1, 6});
    EXPECT_EQ(state.bytes(), 2 * 2 * 2 * 80 * 8 * 4);  // k and v: (B, h, t, dh) floats
  }
}

TEST(AttentionStep, LongformerWindowsDilationsAndGlobalTokens) {
  struct Case {
    int64_t window, dilation, global;
  };
  const std::vector<Case> cases{{6, 1, 2}, {3, 2, 3}, {4, 3, 0}, {0, 1, 1}, {0, 1, 0}, {2, 1, 30}, {5, 2, 1}};
  for (const Case& c : cases) {
    SCOPED_TRACE("window " + std::to_string(c.window) + " dilation " + std::to_string(c.dilation) + " global " +
                 std::to_string(c.global));
    torch::manual_seed(12);
    auto mixer = causal_mixer("longformer", {{"window", std::to_string(c.window)},
                                             {"dilation", std::to_string(c.dilation)},
                                             {"global_tokens", std::to_string(c.global)}});
    auto state = expect_steps_like_forward(*mixer, torch::randn({2, 46, 16}), kChunks);
    const int64_t kept = std::min<int64_t>(c.global, 46) + std::min<int64_t>(c.window * c.dilation, 46);
    EXPECT_EQ(state.bytes(), 2 * 2 * 2 * kept * 8 * 4);  // k and v of the global and window tokens: (B, h, ., dh)
  }
}

TEST(AttentionStep, LongformerStateKeepsItsSizeOnceTheWindowIsFull) {
  torch::NoGradGuard no_grad;
  auto mixer = causal_mixer("longformer", {{"window", "4"}, {"dilation", "2"}, {"global_tokens", "3"}});
  MixerState state;
  mixer->step(torch::randn({1, 12, 16}), state);
  const int64_t at12 = state.bytes();
  for (int i = 0; i < 10; ++i) mixer->step(torch::randn({1, 1, 16}), state);
  EXPECT_EQ(state.bytes(), at12);
  EXPECT_EQ(at12, 2 * 2 * (3 + 4 * 2) * 8 * 4);
}

TEST(AttentionStep, PerformerStepsWithTheFeaturesOfItsForward) {
  for (const auto& own : std::vector<std::map<std::string, std::string>>{
           {}, {{"redraw", "true"}}, {{"n_features", "13"}}}) {
    torch::manual_seed(13);
    auto mixer = causal_mixer("performer", own);
    // Chunks across the forward's own chunks of 64 tokens.
    auto state = expect_steps_like_forward(*mixer, torch::randn({2, 150, 16}), {1, 1, 70, 3, 1, 74});
    const int64_t M = own.count("n_features") ? 13 : 64;
    EXPECT_EQ(state.bytes(), 2 * 2 * (M * (8 + 1) + 1) * 4);  // kv (B, h, M, dh + 1) and key_max (B, h, 1, 1)
  }
}

TEST(AttentionStep, AftVariantsStepLikeTheirForward) {
  for (const auto& own : std::vector<std::map<std::string, std::string>>{
           {{"aft_variant", "simple"}},
           {{"aft_variant", "local"}, {"window", "5"}},
           {{"aft_variant", "local"}, {"window", "1"}},
           {{"aft_variant", "full"}, {"aft_max_len", "64"}}}) {
    const std::string variant = own.at("aft_variant");
    SCOPED_TRACE(variant + (own.count("window") ? " window " + own.at("window") : ""));
    torch::manual_seed(14);
    auto mixer = causal_mixer("aft", own);
    {
      // Biases away from their zero initialisation, so the local correction and the pairwise bias take part.
      torch::NoGradGuard no_grad;
      for (auto& p : mixer->named_parameters())
        if (p.key().find("bias") != std::string::npos && p.value().dim() == 2) p.value().normal_(0.0, 0.5);
    }
    auto state = expect_steps_like_forward(*mixer, torch::randn({2, 46, 16}), kChunks);
    const int64_t B = 2, d = 16;
    if (variant == "full") {
      EXPECT_EQ(state.bytes(), 2 * B * 46 * d * 4);  // every key and value (B, t, d)
    } else {
      const int64_t s = variant == "local" ? std::stoll(own.at("window")) : 1;
      EXPECT_EQ(state.bytes(), B * d * (3 + 2 * (s - 1)) * 4);  // sums, max and the recent tokens
    }
  }
}

TEST(AttentionStep, AftFullRefusesPositionsBeyondItsPairwiseBias) {
  torch::NoGradGuard no_grad;
  auto mixer = causal_mixer("aft", {{"aft_variant", "full"}, {"aft_max_len", "8"}});
  MixerState state;
  mixer->step(torch::randn({1, 8, 16}), state);
  EXPECT_THROW(mixer->step(torch::randn({1, 1, 16}), state), std::invalid_argument);
}

TEST(AttentionStep, NonCausalMixersRefuseToStep) {
  for (const char* name : {"attention", "longformer", "performer", "aft"}) {
    MixerOptions common;
    common.d_model = 16;
    common.n_heads = 2;
    auto mixer = make_mixer(name, common);
    EXPECT_FALSE(mixer->has_recurrent_step()) << name;
    MixerState state;
    EXPECT_THROW(mixer->step(torch::randn({1, 1, 16}), state), std::logic_error) << name;
  }
}

}  // namespace
