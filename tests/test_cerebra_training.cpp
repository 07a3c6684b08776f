// Training tests of the Cerebra layer on a synthetic associative-recall task whose informative tokens are known:
// the router must learn to send the query tokens (and only them) through full attention, and the compute penalty
// λ·expected_flops/dense must move the realised compute.
//
// Task: a sequence of n = 32 tokens, in random order: kPairs key–value tokens (distinct keys out of kKeys, values
// out of kValues; one token carries both one-hots), kQueries query tokens (the key of one of the pairs, query flag
// set, no value) and filler tokens (filler flag only). The target of a query is the value paired with its key; the
// loss is read at the query positions only. Only the queries need global attention: the compressed path (window of
// 5 tokens, 2 memory slots) cannot find the matching pair in general.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "cerebra/models/cerebra_layer.h"
#include "cerebra/core/runtime.h"

namespace cerebra {
namespace {

constexpr int64_t kN = 32, kKeys = 16, kValues = 8, kPairs = 12, kQueries = 4;
constexpr int64_t kFeat = kKeys + kValues + 2;  // key one-hot, value one-hot, query flag, filler flag

struct Batch {
  torch::Tensor x;       // (B, n, kFeat)
  torch::Tensor query;   // (B, n) bool
  torch::Tensor target;  // (B, n) int64 value at query positions, -1 elsewhere
};

Batch make_batch(int64_t B) {
  const int64_t kOne = 1, kTwo = 2;
  auto keys = torch::argsort(torch::rand({B, kKeys}), kOne).narrow(1, 0, kPairs);   // distinct keys per sequence
  auto vals = torch::randint(0, kValues, {B, kPairs}, torch::kLong);
  auto pick = torch::argsort(torch::rand({B, kPairs}), kOne).narrow(1, 0, kQueries);  // which pairs are queried
  auto qkeys = keys.gather(1, pick);
  auto qvals = vals.gather(1, pick);

  const int64_t nf = kN - kPairs - kQueries;
  auto f = torch::TensorOptions().dtype(torch::kFloat);
  auto pair_tok = torch::cat({torch::one_hot(keys, kKeys).to(torch::kFloat), torch::one_hot(vals, kValues).to(torch::kFloat),
                              torch::zeros({B, kPairs, 2}, f)}, kTwo);
  auto query_tok = torch::cat({torch::one_hot(qkeys, kKeys).to(torch::kFloat), torch::zeros({B, kQueries, kValues}, f),
                               torch::ones({B, kQueries, 1}, f), torch::zeros({B, kQueries, 1}, f)}, kTwo);
  auto fill_tok = torch::cat({torch::zeros({B, nf, kKeys + kValues + 1}, f), torch::ones({B, nf, 1}, f)}, kTwo);
  auto tokens = torch::cat({pair_tok, query_tok, fill_tok}, kOne);  // (B, n, kFeat), queries at [kPairs, kPairs+kQ)
  auto tgt = torch::cat({torch::full({B, kPairs}, -1, torch::kLong), qvals, torch::full({B, nf}, -1, torch::kLong)}, kOne);

  auto perm = torch::argsort(torch::rand({B, kN}), kOne);  // random placement
  Batch out;
  out.x = tokens.gather(1, perm.unsqueeze(-1).expand({B, kN, kFeat}));
  out.target = tgt.gather(1, perm);
  out.query = out.target.ge(0);
  return out;
}

struct RecallModel : torch::nn::Module {
  explicit RecallModel(const CerebraOptions& o) {
    in = register_module("in", torch::nn::Linear(kFeat, o.d_model));
    layer = register_module("layer", std::make_shared<CerebraLayer>(o));
    out = register_module("out", torch::nn::Linear(o.d_model, kValues));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // -> logits (B, n, kValues)
    auto h = in->forward(x);
    return out->forward(h + layer->forward(h, {}));
  }
  torch::nn::Linear in{nullptr}, out{nullptr};
  std::shared_ptr<CerebraLayer> layer;
};

CerebraOptions recall_options(RoutingMode mode) {
  CerebraOptions o;
  o.d_model = 32;
  o.n_heads = 2;
  o.mode = mode;
  o.topk = kQueries;
  o.k_max = kN;
  o.window = 4;      // 5-token window
  o.memory_max = 2;  // 2 memory slots
  o.compression_ratio = 0.5;
  o.width_scale = 0.5;
  o.gumbel = RouterNoise::kOn;
  return o;
}

torch::Tensor task_loss(const torch::Tensor& logits, const Batch& b) {
  auto sel = b.query;
  return torch::nll_loss(torch::log_softmax(logits.index({sel}), -1), b.target.index({sel}));
}

// Trains `model` for `steps` on fresh batches with loss = task + λ·expected_flops/(B·dense), with AdamW or (for
// the λ test) plain SGD, whose steps are proportional to the gradient and so to λ's share of it.
void train(RecallModel& model, int steps, int64_t B, double lambda, double lr, bool sgd = false) {
  std::unique_ptr<torch::optim::Optimizer> owned;
  if (sgd)
    owned = std::make_unique<torch::optim::SGD>(model.parameters(), torch::optim::SGDOptions(lr));
  else
    owned = std::make_unique<torch::optim::AdamW>(model.parameters(), torch::optim::AdamWOptions(lr).weight_decay(0.0));
  torch::optim::Optimizer& opt = *owned;
  const double dense = dense_attention_flops(kN, model.layer->options().d_model);
  model.train();
  for (int s = 0; s < steps; ++s) {
    auto b = make_batch(B);
    auto loss = task_loss(model.forward(b.x), b);
    if (lambda > 0) loss = loss + lambda * model.layer->expected_flops() / (static_cast<double>(B) * dense);
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
}

TEST(CerebraTraining, RouterLearnsInformativeTokens) {
  set_threads(1);
  torch::manual_seed(1);
  RecallModel model(recall_options(RoutingMode::kTopK));
  // Task loss plus the compute penalty λ = 0.1: tokens the loss does not need only feel the penalty.
  train(model, 500, 32, 0.1, 3e-3);

  model.eval();
  torch::NoGradGuard ng;
  auto b = make_batch(256);
  auto logits = model.forward(b.x);
  auto sel = model.layer->last_selected();
  const double routed = sel.sum().item<double>();
  const double hits = sel.logical_and(b.query).sum().item<double>();
  const double precision = hits / routed;
  const double chance = static_cast<double>(kQueries) / kN;
  auto acc = logits.argmax(-1).index({b.query}).eq(b.target.index({b.query})).to(torch::kFloat).mean().item<double>();
  std::printf("router precision %.3f (chance %.3f), routed/seq %.2f, query accuracy %.3f (chance %.3f)\n", precision,
              chance, routed / 256.0, acc, 1.0 / kValues);
  EXPECT_GE(precision, 0.8);
}

// Threshold routing: a larger λ must buy strictly less realised compute. The penalty's pull on a gate is about
// λ/n of the task loss's scale (one token's full path is ~1/n of dense attention), so with AdamW, which rescales
// every parameter's step to the size of its gradient noise, λ = 1e-3 is washed out by the task gradient; plain SGD
// moves the router in proportion to λ's share of the gradient. Realised compute is summed over 64 held-out
// sequences run one at a time, so each sequence pays for its own routing.
TEST(CerebraTraining, LambdaMovesRealisedCompute) {
  set_threads(1);
  const uint64_t seed = 0;
  const int steps = 150;
  const double lambdas[] = {0.0, 1e-3, 1e-2, 1e-1};
  torch::manual_seed(seed + 1000);
  const auto fixed = make_batch(64);
  std::vector<double> realised;
  for (double lambda : lambdas) {
    torch::manual_seed(seed);  // same initialisation and the same training batches for every λ
    RecallModel model(recall_options(RoutingMode::kThreshold));
    train(model, steps, 32, lambda, 0.2, /*sgd=*/true);
    model.eval();
    torch::NoGradGuard ng;
    double total = 0, routed = 0;
    for (int64_t i = 0; i < fixed.x.size(0); ++i) {  // one sequence at a time: compute follows each one's routing
      model.forward(fixed.x.narrow(0, i, 1));
      total += model.layer->realised_flops();
      routed += model.layer->last_selected().sum().item<double>();
    }
    model.forward(fixed.x);
    const double batch = model.layer->realised_flops();
    realised.push_back(total);
    std::printf("lambda %-6g realised %.4g FLOPs (%.3f of dense), routed/seq %.2f, batched forward %.4g\n", lambda,
                total, total / (fixed.x.size(0) * dense_attention_flops(kN, 32)), routed / fixed.x.size(0), batch);
  }
  for (size_t i = 1; i < realised.size(); ++i) EXPECT_LT(realised[i], realised[i - 1]) << "lambda index " << i;
}


// Adaptive routing with Mixture-of-Depths skipping, trained with AdamW: over 3 seeds, the compute that runs falls as λ
// rises (each seed's realised FLOPs at λ = 0.1 below its own at λ = 0, and the mean lower by a clear margin).
TEST(CerebraTraining, LambdaMovesRealisedComputeAdaptiveSkip) {
  set_threads(1);
  torch::manual_seed(1000);
  const auto fixed = make_batch(32);
  double sum0 = 0, sum1 = 0;
  for (uint64_t seed : {0, 1, 2}) {
    double realised[2];
    int i = 0;
    for (double lambda : {0.0, 0.1}) {
      torch::manual_seed(seed);
      CerebraOptions o = recall_options(RoutingMode::kAdaptive);
      o.unrouted = Unrouted::kSkip;
      RecallModel model(o);
      train(model, 120, 32, lambda, 3e-3, /*sgd=*/false);
      model.eval();
      torch::NoGradGuard ng;
      model.forward(fixed.x);
      realised[i++] = model.layer->realised_flops();
    }
    std::printf("seed %llu: realised FLOPs lambda 0: %.4g, lambda 0.1: %.4g\n", static_cast<unsigned long long>(seed),
                realised[0], realised[1]);
    EXPECT_LT(realised[1], realised[0]) << "seed " << seed;
    sum0 += realised[0];
    sum1 += realised[1];
  }
  EXPECT_LT(sum1, 0.8 * sum0);
}

}  // namespace
}  // namespace cerebra
