// The causal Cerebra layer: no output reads a later position (evaluation: the predictor routes), the FLOPs it
// reports are the FLOPs that ran, the predictor learns top-k's decisions from the token alone, dense mode is causal
// attention, and options without a causal form are refused by name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/cerebra_causal.h"
#include "cerebra/train/run.h"
#include "step_test_util.h"
#include "test_helpers.h"

namespace {
using namespace cerebra;

std::shared_ptr<CausalCerebraLayer> causal_layer(std::map<std::string, std::string> own = {}, int64_t d = 16) {
  std::map<std::string, std::string> base{{"window", "5"}, {"topk", "6"}, {"memory_block", "4"}, {"memory_max", "3"}};
  for (const auto& [k, v] : own) base[k] = v;
  auto m = std::dynamic_pointer_cast<CausalCerebraLayer>(test::causal_mixer("cerebra", base, d));
  EXPECT_TRUE(m) << "mixer cerebra with causal = true is not the causal layer";
  return m;
}

TEST(CerebraCausal, NoOutputReadsALaterPosition) {
  torch::NoGradGuard ng;
  torch::manual_seed(1);
  for (bool dense : {false, true}) {
    SCOPED_TRACE(dense ? "dense" : "routed");
    auto layer = causal_layer();
    layer->eval();
    layer->set_dense(dense);
    auto x = torch::randn({2, 40, 16});
    auto y = layer->forward(x, torch::Tensor());
    if (!dense) {
      const double routed = layer->last_selected().to(torch::kFloat64).mean().item<double>();
      EXPECT_GT(routed, 0.0);  // both paths run in this test
      EXPECT_LT(routed, 1.0);
    }
    for (int64_t t : {5, 17, 33, 39}) {
      auto x2 = x.clone();
      x2.slice(1, t).normal_();  // every position from t on changes
      auto y2 = layer->forward(x2, torch::Tensor());
      EXPECT_TRUE(torch::allclose(y.slice(1, 0, t), y2.slice(1, 0, t), 1e-5, 1e-5)) << "perturbing from " << t;
      EXPECT_FALSE(torch::allclose(y.slice(1, t), y2.slice(1, t), 1e-3, 1e-3));
    }
  }
}

// Realised FLOPs equal the matmul-class work the FLOP counter sees, in training (top-k) and evaluation (predictor).
TEST(CerebraCausal, RealisedFlopsAreTheWorkThatRan) {
  torch::manual_seed(2);
  for (bool training : {true, false}) {
    for (const auto& own : std::vector<std::map<std::string, std::string>>{
             {}, {{"memory_max", "0"}}, {{"topk", "0"}}, {{"topk", "64"}}, {{"conv_kernel", "5"}, {"window", "1"}}}) {
      auto layer = causal_layer(own);
      layer->train(training);
      auto x = torch::randn({3, 37, 16});
      double counted = 0;
      {
        FlopCounter counter;
        layer->forward(x, torch::Tensor());
        counted = counter.total();
      }
      EXPECT_NEAR(layer->realised_flops(), counted, 1e-9 * counted) << (training ? "training" : "eval");
    }
  }
}

// Top-k in training: exactly min(k, n) tokens per sequence on the full path; the expected cost of hard gates that
// match the selection is the realised cost.
TEST(CerebraCausal, TrainingRoutesTopKAndTheExpectedCostFollowsTheGates) {
  torch::manual_seed(3);
  auto layer = causal_layer({{"gumbel", "false"}});
  layer->train();
  auto x = torch::randn({2, 30, 16});
  layer->forward(x, torch::Tensor());
  EXPECT_TRUE(layer->last_selected().sum(1).eq(6).all().item<bool>());
  ASSERT_TRUE(layer->expected_flops().defined());
  ASSERT_TRUE(layer->aux_loss().defined());
  // Expected cost with gates g: Σ g·c_full + (1 − g)·c_comp + shared, between the all-compressed and all-full costs.
  const auto c = layer->costs(30);
  const double lo = 2 * (c.base + c.full_shared + c.comp_shared + 30 * std::min(c.per_full, c.per_comp));
  const double hi = 2 * (c.base + c.full_shared + c.comp_shared + 30 * std::max(c.per_full, c.per_comp));
  const double e = layer->expected_flops().item<double>();
  EXPECT_GE(e, lo);
  EXPECT_LE(e, hi);
  // The gates get the cost's gradient.
  layer->expected_flops().backward();
  ASSERT_TRUE(layer->router->score->weight.grad().defined());
  EXPECT_GT(layer->router->score->weight.grad().abs().sum().item<double>(), 0.0);
}

// The predictor, trained on its auxiliary loss alone, learns which tokens top-k picks when the choice depends on
// the token (here: the router scores the first coordinate).
TEST(CerebraCausal, PredictorLearnsTheTopKDecision) {
  torch::manual_seed(4);
  auto layer = causal_layer({{"gumbel", "false"}, {"topk", "10"}});
  {
    torch::NoGradGuard ng;
    layer->router->score->weight.zero_();
    layer->router->score->weight[0][0] = 5.0;
  }
  torch::optim::Adam opt(std::vector<torch::Tensor>{layer->pred_in->weight, layer->pred_in->bias,
                                                    layer->pred_out->weight, layer->pred_out->bias},
                         torch::optim::AdamOptions(1e-2));
  double agreement = 0;
  for (int it = 0; it < 150; ++it) {
    layer->train();
    auto x = torch::randn({8, 40, 16});
    layer->forward(x, torch::Tensor());
    opt.zero_grad();
    layer->aux_loss().backward();
    opt.step();
    agreement = layer->stats().at("predictor_agreement");
  }
  EXPECT_GT(agreement, 0.85);
  layer->eval();
  torch::NoGradGuard ng;
  layer->forward(torch::randn({8, 40, 16}), torch::Tensor());
  EXPECT_GT(layer->stats().at("predictor_agreement"), 0.85);
}

// Generation equals the full forward in every shape of the memory and window, and in dense mode.
TEST(CerebraCausal, StepsLikeTheFullForwardInEveryLayout) {
  for (const auto& own : std::vector<std::map<std::string, std::string>>{
           {{"memory_max", "0"}}, {{"memory_block", "1"}, {"memory_max", "5"}}, {{"conv_kernel", "5"}, {"window", "1"}},
           {{"memory_block", "7"}, {"window", "20"}}, {{"topk", "0"}}}) {
    for (bool dense : {false, true}) {
      SCOPED_TRACE(own.begin()->first + "=" + own.begin()->second + (dense ? " dense" : ""));
      torch::manual_seed(9);
      auto layer = causal_layer(own);
      layer->set_dense(dense);
      test::expect_steps_like_forward(*layer, torch::randn({2, 53, 16}), {3, 1, 30, 1, 18});
    }
  }
}

TEST(CerebraCausal, DenseModeIsCausalAttentionCost) {
  auto layer = causal_layer();
  layer->set_dense(true);
  layer->eval();
  torch::NoGradGuard ng;
  layer->forward(torch::randn({1, 24, 16}), torch::Tensor());
  EXPECT_DOUBLE_EQ(layer->flops(24), dense_attention_flops(24, 16));
  EXPECT_TRUE(layer->last_selected().all().item<bool>());
}

TEST(CerebraCausal, OptionsWithoutACausalFormAreRefusedByName) {
  for (const auto& [key, value, named] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"router_mode", "adaptive", "router_mode"}, {"router_mode", "soft", "router_mode"},
           {"unrouted", "skip", "unrouted"}, {"compressor", "attnpool", "compressor"},
           {"rec_weight", "0.1", "rec_weight"}, {"window", "0", "window"}}) {
    try {
      causal_layer({{key, value}});
      ADD_FAILURE() << key << " = " << value << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    }
  }
  auto layer = causal_layer();
  layer->train();
  MixerState state;
  EXPECT_THROW(layer->step(torch::randn({1, 1, 16}), state), std::exception);  // top-k in training is not causal
  auto left_padded = torch::ones({2, 8}, torch::kBool);
  left_padded[1][0] = false;
  EXPECT_THROW(layer->forward(torch::randn({2, 8, 16}), left_padded), std::exception);  // padding before real tokens
}

// A causal Cerebra language model trains, reports how often its predictor agreed with top-k on the test text, and
// `eval` with eval_routing = topk evaluates the same weights with top-k (exactly k of n tokens routed).
TEST(CerebraCausal, LanguageModelRunReportsThePredictorAndEvaluatesWithTopK) {
  const auto dir = test::temp_dir("cerebra_causal_lm");
  Config c;
  c.set("task", "janeausten", "test");
  c.set("data", test::source_path("tests/fixtures/lm_small.txt"), "test");
  c.set("model", "cerebra", "test");
  for (const auto& [k, v] : std::map<std::string, std::string>{
           {"threads", "1"}, {"d_model", "16"}, {"n_heads", "2"}, {"n_layers", "1"}, {"seq_len", "24"},
           {"train_examples", "8"}, {"val_examples", "2"}, {"test_examples", "3"}, {"batch_size", "4"},
           {"eval_batch_size", "2"}, {"steps", "3"}, {"topk", "4"}, {"window", "4"}, {"memory_block", "4"},
           {"val_fraction", "0.2"}, {"test_fraction", "0.2"}})
    c.set(k, v, "test");
  const nlohmann::json summary = train_run(parse_run_spec(c), (dir / "run").string(), RunOptions{true});
  const auto& m = summary["metrics"];
  ASSERT_TRUE(m.contains("test_predictor_agreement")) << m.dump();
  EXPECT_GE(m["test_predictor_agreement"].get<double>(), 0.0);
  EXPECT_LE(m["test_predictor_agreement"].get<double>(), 1.0);

  const nlohmann::json same = eval_run((dir / "run").string(), RunOptions{true});
  EXPECT_TRUE(same["matches_summary"].get<bool>());
  const nlohmann::json topk = eval_run((dir / "run").string(), RunOptions{true}, {{"eval_routing", "topk"}});
  EXPECT_DOUBLE_EQ(topk["metrics"]["test_routed_fraction"].get<double>(), 4.0 / 24.0);
  EXPECT_EQ(topk["overrides"]["eval_routing"], "topk");
  EXPECT_FALSE(topk.contains("matches_summary"));
  EXPECT_THROW(eval_run((dir / "run").string(), RunOptions{true}, {{"no_such_key", "1"}}), ConfigError);
  std::filesystem::remove_all(dir);
}

}  // namespace
