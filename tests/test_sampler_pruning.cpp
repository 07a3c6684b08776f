// The compute-aware sampler (frequencies follow the formula, the floor holds) and structured pruning (lowest
// scores go, pruned == masked, FLOPs drop and stay measurable, pruned checkpoints reload, runs end to end).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "cerebra/train/spec.h"
#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/models.h"
#include "cerebra/models/pruning.h"
#include "cerebra/core/runtime.h"
#include "cerebra/train/sampler.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace cerebra;
using test::temp_dir;

namespace {

// ---- sampler

// The formula written out independently of Sampler::probabilities().
std::vector<double> formula(const std::vector<double>& rho, const std::vector<double>& cost, double beta,
                            double gamma, double floor) {
  const double mean = std::accumulate(rho.begin(), rho.end(), 0.0) / static_cast<double>(rho.size());
  std::vector<double> w(rho.size());
  double z = 0;
  for (size_t i = 0; i < rho.size(); ++i) z += (w[i] = std::exp(beta * rho[i] / mean - gamma * cost[i]));
  for (auto& v : w) v = (1 - floor) * v / z + floor / static_cast<double>(rho.size());
  return w;
}

TEST(Sampler, FrequenciesFollowTheFormula) {
  SamplerOptions o;
  o.enabled = true;
  o.beta = 1.5;
  o.gamma = 0.7;
  o.floor = 0.2;
  o.ema = 0.5;
  const std::vector<double> rho{0.1, 0.4, 1.0, 2.5, 0.05, 0.8, 1.6, 0.3};
  const std::vector<double> cost{1.0, 0.5, 2.0, 1.0, 0.2, 1.5, 3.0, 0.9};
  Sampler s(static_cast<int64_t>(rho.size()), o);
  std::vector<int64_t> pos(rho.size());
  std::iota(pos.begin(), pos.end(), 0);
  // EMA: the first observation sets rho, later ones blend with weight 1 - ema.
  std::vector<double> first(rho.size(), 1.0), second(rho.size());
  for (size_t i = 0; i < rho.size(); ++i) second[i] = (rho[i] - o.ema * 1.0) / (1 - o.ema);
  s.observe(pos, first);
  s.observe(pos, second);
  for (size_t i = 0; i < rho.size(); ++i) EXPECT_NEAR(s.rho()[i], rho[i], 1e-12);
  EXPECT_THROW(s.observe_cost(pos, std::vector<double>(3, 1.0)), std::invalid_argument);
  s.observe_cost(pos, std::vector<double>(cost.size(), 5.0));  // the last pass's cost is the one kept
  s.observe_cost(pos, cost);
  const auto want = formula(rho, cost, o.beta, o.gamma, o.floor);
  const auto p = s.probabilities();
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], want[i], 1e-12) << i;

  const int64_t M = 200000;
  std::mt19937_64 rng(7);
  std::vector<double> count(rho.size(), 0.0);
  for (auto v : s.draw(M, rng)) count[static_cast<size_t>(v)] += 1;
  double chi2 = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double f = count[i] / M, sd = std::sqrt(p[i] * (1 - p[i]) / M);
    std::cout << "example " << i << ": p " << p[i] << ", frequency " << f << " (" << (f - p[i]) / sd << " sd)\n";
    EXPECT_LE(std::abs(f - p[i]), 5 * sd) << i;  // 5 standard deviations of a binomial share
    chi2 += (count[i] - M * p[i]) * (count[i] - M * p[i]) / (M * p[i]);
  }
  EXPECT_LT(chi2, 24.3);  // chi-square, 7 degrees of freedom: the 0.999 quantile
}

TEST(Sampler, FloorHoldsAndEveryExampleIsSeenUnderAHugeBeta) {
  SamplerOptions o;
  o.enabled = true;
  o.beta = 500;
  o.gamma = 0;
  o.floor = 0.2;
  const int64_t N = 50;
  Sampler s(N, o);
  std::vector<int64_t> pos(N);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<double> loss(N, 0.01);
  loss[17] = 10.0;  // one example dominates the softmax
  s.observe(pos, loss);
  const auto p = s.probabilities();
  for (double v : p) EXPECT_GE(v, o.floor / N * (1 - 1e-12));
  EXPECT_NEAR(p[17], (1 - o.floor) + o.floor / N, 1e-9);
  std::mt19937_64 rng(3);
  for (int epoch = 0; epoch < 100; ++epoch) s.draw(N, rng);
  auto stats = s.epoch_stats(true);
  EXPECT_DOUBLE_EQ(stats["sampler_seen_ever"].get<double>(), 1.0);
  EXPECT_LT(stats["sampler_seen_epoch"].get<double>(), 0.5);  // one epoch alone mostly repeats example 17
  EXPECT_LT(stats["sampler_ess"].get<double>(), 0.1);
  EXPECT_NEAR(stats["sampler_p_min"].get<double>(), o.floor / N, 1e-12);
}

TEST(Sampler, RejectsBadOptions) {
  Config c;
  c.set("sampler", "compute_aware", "test");
  c.set("sampler_floor", "1.5", "test");
  EXPECT_THROW(parse_run_spec(c), ConfigError);
  c.set("sampler_floor", "0.1", "test");
  c.set("sampler_ema", "1", "test");
  EXPECT_THROW(parse_run_spec(c), ConfigError);
  EXPECT_THROW(c.set("sampler", "sometimes", "test"), ConfigError);
}

// ---- pruning

std::shared_ptr<Model> build(const std::string& model, uint64_t seed, const std::string& extra_key = "",
                             const std::string& extra_value = "") {
  Config c = test::fixture_config(model);
  c.set("topk", "2", "test");
  c.set("window", "2", "test");
  c.set("n_heads", "4", "test");
  if (!extra_key.empty()) c.set(extra_key, extra_value, "test");
  torch::manual_seed(seed);
  auto m = make_tabular_model(parse_run_spec(c).model, InputSchema{2, {3, 4, 5, 3}, 1});
  m->eval();
  return m;
}

Batch toy_batch(int64_t B, uint64_t seed) {
  torch::manual_seed(seed);
  Batch b;
  b.num = torch::randn({B, 2});
  b.cat = torch::stack({torch::randint(3, {B}), torch::randint(4, {B}), torch::randint(5, {B}), torch::randint(3, {B})},
                       1);
  b.y = torch::randn({B});
  return b;
}

double measured_per_example(Model& m, const Batch& b) {
  torch::NoGradGuard g;
  FlopCounter counter;
  m.forward(b);
  return counter.total() / static_cast<double>(b.size());
}

// Keeps roughly half of every group's units (a fixed, irregular pattern), at least one.
std::vector<int64_t> some_units(int64_t units, int64_t salt) {
  std::vector<int64_t> keep;
  for (int64_t j = 0; j < units; ++j)
    if ((j * 7 + salt) % 3 != 0) keep.push_back(j);
  if (keep.empty()) keep.push_back(units - 1);
  return keep;
}

TEST(Pruning, SelectKeepRemovesLowestScoresAndKeepsOnePerGroup) {
  auto keep = select_keep({{3, 1, 2}, {0.5, 4}}, 2);
  EXPECT_EQ(keep[0], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(keep[1], (std::vector<int64_t>{1}));
  keep = select_keep({{3, 1, 2}, {0.5, 4}}, 10);  // asks for more than allowed: one unit stays in each group
  EXPECT_EQ(keep[0], (std::vector<int64_t>{0}));
  EXPECT_EQ(keep[1], (std::vector<int64_t>{1}));
}

TEST(Pruning, PrunerRemovesTheLowestTaylorScoresPerFlop) {
  set_threads(1);
  auto m = build("transformer", 1);
  auto groups = model_prune_groups(*m);
  std::vector<ModelPruneGroup> ffn;
  for (const auto& g : groups)
    if (g.kind == "ffn") ffn.push_back(g);
  ASSERT_EQ(ffn.size(), 2u);
  const int64_t U = ffn[0].units;  // 2·d = 32
  // Known scores: |Σ g·w| of unit j = its score; layer 0 holds the even scores, layer 1 the odd ones, shuffled.
  // The bias of ffn_in unit j carries the score as a marker that survives the pruning.
  std::mt19937 rng(5);
  for (auto& p : m->parameters()) p.mutable_grad() = torch::zeros_like(p);
  for (int64_t l = 0; l < 2; ++l) {
    std::vector<double> score(static_cast<size_t>(U));
    for (int64_t j = 0; j < U; ++j) score[static_cast<size_t>(j)] = static_cast<double>(2 * j + l);
    std::shuffle(score.begin(), score.end(), rng);
    auto named = m->named_parameters();
    const std::string s = std::to_string(l);
    auto w_out = named["backbone.ffn_out" + s + ".weight"];
    auto b_in = named["backbone.ffn_in" + s + ".bias"];
    torch::NoGradGuard g;
    w_out.fill_(1.0);
    auto sc = torch::tensor(score, torch::kFloat32);
    w_out.mutable_grad() = (sc / static_cast<double>(w_out.size(0))).unsqueeze(0).expand_as(w_out).clone();
    b_in.copy_(sc);
  }
  PruneSchedule sched;
  sched.start_epoch = 1;
  sched.epochs = 1;
  sched.target = 0.5;
  sched.kinds = {"ffn"};
  Pruner pruner(*m, sched);
  pruner.accumulate(1);
  ASSERT_TRUE(pruner.end_epoch(1));
  // The 32 lowest of the 64 scores (0..31) are gone: 16 from each layer; the survivors are 32..63.
  std::vector<double> kept;
  for (int64_t l = 0; l < 2; ++l) {
    auto b = m->named_parameters()["backbone.ffn_in" + std::to_string(l) + ".bias"];
    EXPECT_EQ(b.size(0), U / 2);
    for (int64_t j = 0; j < b.size(0); ++j) kept.push_back(b[j].item<double>());
  }
  std::sort(kept.begin(), kept.end());
  for (size_t i = 0; i < kept.size(); ++i) EXPECT_EQ(kept[i], 32.0 + static_cast<double>(i));
  EXPECT_EQ(pruner.report()["prune_kept"]["ffn"].get<int64_t>(), U);
}

struct PruneCase {
  std::string model;
  std::vector<std::string> kinds;
};

class PrunedModel : public ::testing::TestWithParam<PruneCase> {};

// Prunes some units of every group of the requested kinds in one model and masks the same units in an identical
// model: outputs agree; FLOPs drop and the analytic count matches the measured one.
TEST_P(PrunedModel, MatchesMaskedModelAndCountsFlops) {
  set_threads(1);
  const auto& pc = GetParam();
  auto pruned = build(pc.model, 11), masked = build(pc.model, 11), original = build(pc.model, 11);
  Batch b = toy_batch(16, 2);
  const double before = pruned->flops_per_example();
  const int64_t params_before = pruned->parameter_count();
  int64_t salt = 0, groups_pruned = 0;
  for (const auto& g : model_prune_groups(*pruned)) {
    if (std::find(pc.kinds.begin(), pc.kinds.end(), g.kind) == pc.kinds.end()) continue;
    auto keep = some_units(g.units, salt++);
    prune_group(*pruned, g, keep);
    mask_group(*masked, g, keep);
    ++groups_pruned;
  }
  ASSERT_GT(groups_pruned, 0);
  for (const auto& kind : pc.kinds) {
    bool found = false;
    for (const auto& g : model_prune_groups(*pruned)) found |= g.kind == kind;
    EXPECT_TRUE(found) << kind;
  }
  torch::NoGradGuard ng;
  auto yp = pruned->forward(b), ym = masked->forward(b);
  const double diff = (yp - ym).abs().max().item<double>();
  std::cout << pc.model << ": max |pruned - masked| = " << diff << "\n";
  EXPECT_LT(diff, 1e-5);
  EXPECT_GT((original->forward(b) - ym).abs().max().item<double>(), 1e-4);  // the removed units did matter

  const double after = pruned->flops_per_example(), measured = measured_per_example(*pruned, b);
  std::cout << pc.model << ": FLOPs/example " << before << " -> " << after << " (measured " << measured
            << "), params " << params_before << " -> " << pruned->parameter_count() << "\n";
  EXPECT_LT(after, before);
  EXPECT_LT(pruned->parameter_count(), params_before);
  EXPECT_NEAR(measured / after, 1.0, 0.05);
}

// Saves a pruned model, rebuilds a fresh one from the prune state and loads it: identical outputs.
TEST_P(PrunedModel, CheckpointReloadsIntoAFreshModel) {
  set_threads(1);
  const auto& pc = GetParam();
  auto m = build(pc.model, 21);
  int64_t salt = 3;
  for (const auto& g : model_prune_groups(*m))
    if (std::find(pc.kinds.begin(), pc.kinds.end(), g.kind) != pc.kinds.end()) prune_group(*m, g, some_units(g.units, salt++));
  auto dir = temp_dir("prune_ckpt_" + pc.model);
  save_model(*m, (dir / "model.pt").string());
  const nlohmann::json state = prune_state(*m);

  auto fresh = build(pc.model, 99);
  EXPECT_THROW(apply_prune_state(*fresh, nlohmann::json{{"layer9.ffn", 3}}, "pruned.json"), std::runtime_error);
  apply_prune_state(*fresh, state, "pruned.json");
  EXPECT_EQ(prune_state(*fresh), state);
  load_model(*fresh, (dir / "model.pt").string());
  fresh->eval();
  Batch b = toy_batch(12, 4);
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::equal(m->forward(b), fresh->forward(b)));
  EXPECT_DOUBLE_EQ(m->flops_per_example(), fresh->flops_per_example());
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Kinds, PrunedModel,
                         ::testing::Values(PruneCase{"transformer", {"heads", "ffn"}}, PruneCase{"cnn", {"channels"}},
                                           PruneCase{"cerebra", {"heads", "ffn"}}),
                         [](const auto& info) { return info.param.model; });

TEST(Pruning, PruneKindsTheModelLacksAreRejected) {
  auto m = build("transformer", 1);
  PruneSchedule s;
  s.start_epoch = 1;
  s.target = 0.5;
  s.kinds = {"channels"};
  EXPECT_THROW(Pruner(*m, s), ConfigError);
}

// A full run with the sampler and gradual pruning: pruned sizes saved, eval reproduces the test metrics, the
// pruned model's FLOPs are lower, and the metrics carry the sampler and pruning fields.
TEST(Pruning, RunWithSamplerAndPruningEvaluatesFromItsDirectory) {
  Config c = test::fixture_config("cerebra");
  c.set("n_heads", "4", "test");
  c.set("topk", "3", "test");
  c.set("window", "2", "test");
  c.set("epochs", "4", "test");
  c.set("sampler", "compute_aware", "test");
  c.set("sampler_start_epoch", "2", "test");
  c.set("prune_start_epoch", "2", "test");
  c.set("prune_epochs", "2", "test");
  c.set("prune_target", "0.5", "test");
  c.set("prune_kinds", "heads,ffn", "test");
  auto dir = temp_dir("prune_run");
  nlohmann::json s = train_run(parse_run_spec(c), (dir / "run").string(), RunOptions{true});
  ASSERT_TRUE(fs::exists(dir / "run" / "pruned.json"));
  const auto& pr = s["training"]["pruning"];
  EXPECT_EQ(pr["prune_kept"]["heads"].get<int64_t>(), pr["prune_original"]["heads"].get<int64_t>() / 2);
  EXPECT_EQ(pr["prune_kept"]["ffn"].get<int64_t>(), pr["prune_original"]["ffn"].get<int64_t>() / 2);
  const double analytic = s["flops"]["analytic_forward_per_example"].get<double>();
  EXPECT_NEAR(s["flops"]["measured_forward_per_example"].get<double>() / analytic, 1.0, 0.05);

  std::ifstream f(dir / "run" / "metrics.jsonl");
  std::string line;
  int epochs = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    ++epochs;
    // Epoch 1 is before the first pruning step: the model as built.
    if (epochs == 1) EXPECT_LT(analytic, 0.95 * j["analytic_flops_per_example"].get<double>());
    EXPECT_TRUE(j.contains("sampler_ess"));
    EXPECT_EQ(j["sampler_active"].get<bool>(), j["epoch"].get<int>() >= 2);
    EXPECT_TRUE(j.contains("prune_kept"));
  }
  EXPECT_EQ(epochs, 4);
  nlohmann::json e = eval_run((dir / "run").string(), RunOptions{true});
  EXPECT_TRUE(e["matches_summary"].get<bool>());
  fs::remove_all(dir);
}

}  // namespace
