// The compute term C of J = L + λ·C on padded batches of variable-length text: C is the batch's expected FLOPs over
// the dense FLOPs of its real tokens, so a batch of short examples is not judged against the dense cost of max_len.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cerebra/core/config.h"
#include "cerebra/data/task.h"
#include "cerebra/models/cerebra_layer.h"
#include "cerebra/train/compute_objective.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"

namespace cerebra {
namespace {

constexpr int64_t kN = 32, kVocab = 20;

std::shared_ptr<Model> text_model(const std::string& model, int64_t n,
                                  const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  Config c;
  for (const auto& [k, v] : extra) c.set(k, v, "test");
  c.set("task", "wordnet", "test");
  c.set("model", model, "test");
  c.set("d_model", "16", "test");
  c.set("n_heads", "2", "test");
  c.set("n_layers", "2", "test");
  c.set("router_mode", "adaptive", "test");
  TaskInfo info;
  info.name = "wordnet";
  info.head = HeadKind::SequenceClassification;
  info.vocab = kVocab;
  info.n = n;
  info.n_classes = 5;
  return make_model(parse_run_spec(c, false).model, info);
}

Batch padded_batch(const std::vector<int64_t>& lengths) {
  Batch b;
  const auto B = static_cast<int64_t>(lengths.size());
  b.tokens = torch::randint(1, kVocab, {B, kN}, torch::kLong);
  b.mask = torch::zeros({B, kN}, torch::kBool);
  for (int64_t i = 0; i < B; ++i) {
    b.mask[i].slice(0, 0, lengths[static_cast<size_t>(i)]).fill_(true);
    b.tokens[i].slice(0, lengths[static_cast<size_t>(i)]).fill_(0);
  }
  b.y = torch::randint(0, 5, {B}, torch::kLong);
  return b;
}

// C of the last forward, read back from J with λ = 1 and a zero task loss.
double cost(ComputeObjective& objective, int64_t B, const torch::Tensor& mask) {
  return objective.objective(torch::tensor(0.0), B, mask).item<double>();
}

TEST(ComputeObjective, DenseNormaliserAtARealLengthIsTheDenseModelOfThatLength) {
  torch::manual_seed(3);
  auto cerebra = text_model("cerebra", kN);
  ComputeObjective objective(*cerebra, ComputeSchedule{});
  EXPECT_DOUBLE_EQ(objective.dense_flops_at(kN), objective.dense_flops_per_example());
  for (int64_t L : {4, 11, 20}) {
    // The Transformer of the same shape built for sequences of L tokens; its per-example head is the only part
    // that does not scale with the tokens, a small share.
    const double transformer = text_model("transformer", L)->flops_per_example();
    EXPECT_NEAR(objective.dense_flops_at(L), transformer, 0.02 * transformer) << "L = " << L;
    EXPECT_LT(objective.dense_flops_at(L), objective.dense_flops_at(L + 1));
  }
}

TEST(ComputeObjective, PaddedBatchesAreJudgedAtTheirRealLengths) {
  torch::manual_seed(4);
  auto model = text_model("cerebra", kN);
  ComputeSchedule schedule;
  schedule.lambda_target = schedule.lambda0 = 1.0;
  ComputeObjective objective(*model, schedule);
  ASSERT_TRUE(objective.active());
  objective.begin_epoch(1);
  model->train();

  // A batch without padding: the mask changes nothing.
  Batch full = padded_batch({kN, kN, kN});
  model->forward(full);
  EXPECT_DOUBLE_EQ(cost(objective, 3, full.mask), cost(objective, 3, torch::Tensor()));

  // Short examples: the expected work is set against the dense work of 6, 9 and 12 tokens, not of 32.
  const std::vector<int64_t> lengths{6, 9, 12};
  Batch b = padded_batch(lengths);
  model->forward(b);
  const double unmasked = cost(objective, 3, torch::Tensor());
  const double masked = cost(objective, 3, b.mask);
  double dense = 0, real = 0;
  for (int64_t L : lengths) {
    dense += objective.dense_flops_at(L) / 3.0;
    real += static_cast<double>(L);
  }
  const double breakdown_dense = objective.dense_flops_per_example();
  const double expected_mixers = unmasked * breakdown_dense - compute_breakdown(*model).static_flops;
  const double want = (expected_mixers + compute_breakdown(*model).static_flops * real / (3.0 * kN)) / dense;
  EXPECT_NEAR(masked, want, 1e-6 * want);  // J is in the task loss's float precision
  EXPECT_GT(masked, 2.0 * unmasked) << "a short batch costs a larger share of its own dense work";
  EXPECT_LT(masked, 1.5) << "C stays a share of the dense work (the router and compressor add little)";
}

// A fractional schedule (a step budget is one epoch) moves at every step; a whole-epoch one only at epoch starts,
// as before: dense until the warm-up's position, then λ and τ along the ramp.
TEST(ComputeSchedule, FractionalWarmUpAndRampAdvanceEveryStep) {
  ComputeSchedule s;
  s.warm_epochs = 0.25;
  s.ramp_epochs = 0.5;
  s.lambda0 = 0.0;
  s.lambda_target = 0.1;
  s.tau = 1.0;
  s.tau_min = 0.25;
  EXPECT_TRUE(s.per_step());
  EXPECT_TRUE(s.dense(0.0));
  EXPECT_TRUE(s.dense(0.24));
  EXPECT_FALSE(s.dense(0.25));
  EXPECT_EQ(s.lambda(0.2), 0.0);
  EXPECT_NEAR(s.lambda(0.5), 0.05, 1e-12);
  EXPECT_NEAR(s.lambda(0.9), 0.1, 1e-12);
  EXPECT_NEAR(s.temperature(0.5), 0.5, 1e-12);  // geometric: 1 · (0.25)^(1/2)
  EXPECT_EQ(s.first_epoch_after_ramp(), 2);

  ComputeSchedule whole;
  whole.warm_epochs = 2;
  whole.ramp_epochs = 2;
  whole.lambda_target = 0.1;
  EXPECT_FALSE(whole.per_step());
  EXPECT_EQ(whole.first_epoch_after_ramp(), 5);
  EXPECT_TRUE(whole.dense(1.0));   // epoch 2 starts at position 1
  EXPECT_FALSE(whole.dense(2.0));  // epoch 3
  EXPECT_NEAR(whole.lambda(3.0), 0.05, 1e-12);

  // The objective follows the steps of a per-step schedule, and ignores them for a whole-epoch one.
  torch::manual_seed(5);
  auto model = text_model("cerebra", kN);
  ComputeObjective per_step(*model, s);
  per_step.begin_epoch(1);
  EXPECT_TRUE(per_step.epoch_summary()["dense"].get<bool>());
  per_step.begin_step(0.5);
  EXPECT_FALSE(per_step.epoch_summary()["dense"].get<bool>());
  EXPECT_NEAR(per_step.epoch_summary()["lambda"].get<double>(), 0.05, 1e-12);
  ComputeObjective per_epoch(*model, whole);
  per_epoch.begin_epoch(4);
  per_epoch.begin_step(3.9);
  EXPECT_NEAR(per_epoch.epoch_summary()["lambda"].get<double>(), 0.05, 1e-12);
}

// gumbel = anneal: the router's training noise is full when the router switches on, fades along the λ
// ramp and is gone after it, so the routing that trains on is the routing evaluated. Without a ramp there is none.
TEST(ComputeSchedule, AnnealedRouterNoiseFadesAlongTheRampAndIsGoneAfterIt) {
  ComputeSchedule s;
  s.warm_epochs = 0.25;
  s.ramp_epochs = 0.5;
  EXPECT_EQ(s.exploration(0.0), 1.0);
  EXPECT_EQ(s.exploration(0.25), 1.0);
  EXPECT_NEAR(s.exploration(0.5), 0.5, 1e-12);
  EXPECT_EQ(s.exploration(0.75), 0.0);
  EXPECT_EQ(s.exploration(0.9), 0.0);
  EXPECT_EQ(ComputeSchedule{}.exploration(0.0), 0.0);

  torch::manual_seed(6);
  auto model = text_model("cerebra", kN, {{"gumbel", "anneal"}});
  std::vector<std::shared_ptr<CerebraLayer>> layers;
  for (const auto& m : model->mixers())
    if (auto l = std::dynamic_pointer_cast<CerebraLayer>(m)) layers.push_back(l);
  ASSERT_EQ(layers.size(), 2u);
  ASSERT_EQ(layers[0]->options().gumbel, RouterNoise::kAnneal);
  ComputeObjective objective(*model, s);
  objective.begin_epoch(1);
  model->train();
  Batch b = padded_batch({kN, 20, 9, kN});
  // The selection of the first layer (its input does not depend on the routing) over repeated training forwards.
  auto selections_differ = [&] {
    model->forward(b);
    const torch::Tensor first = layers[0]->last_selected().clone();
    for (int rep = 0; rep < 8; ++rep) {
      model->forward(b);
      if (!torch::equal(first, layers[0]->last_selected())) return true;
    }
    return false;
  };
  objective.begin_step(0.3);
  EXPECT_NEAR(layers[0]->noise_scale(), 0.9, 1e-12);
  EXPECT_TRUE(selections_differ()) << "noise while lambda ramps";
  objective.begin_step(0.8);
  EXPECT_EQ(layers[1]->noise_scale(), 0.0);
  EXPECT_FALSE(selections_differ()) << "no noise after the ramp";
  model->forward(b);
  const torch::Tensor trained = layers[0]->last_selected().clone();
  model->eval();
  model->forward(b);
  EXPECT_TRUE(torch::equal(trained, layers[0]->last_selected())) << "training routes as evaluation does";
}

}  // namespace
}  // namespace cerebra
