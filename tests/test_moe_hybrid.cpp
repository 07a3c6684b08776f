// The moe feed-forward (routing, capacity, balance loss, FLOPs flat in E, padding), hybrid per-layer backbones and
// the short causal convolution before the mixers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <typeinfo>

#include <nlohmann/json.hpp>

#include "cerebra/core/flop_counter.h"
#include "cerebra/models/models.h"
#include "cerebra/models/moe.h"
#include "cerebra/models/pruning.h"
#include "cerebra/train/compute_objective.h"
#include "cerebra/train/spec.h"
#include "test_helpers.h"

namespace cerebra {
namespace {

MoeOptions moe_opts(int64_t E, int64_t k, double capacity) {
  MoeOptions o;
  o.experts = E;
  o.topk = k;
  o.capacity = capacity;
  return o;
}

// Plain-torch reference: a loop over the real tokens, each through its top-k experts (no capacity).
torch::Tensor moe_reference(MoeFeedForwardImpl& m, const torch::Tensor& x, const torch::Tensor& mask) {
  const int64_t B = x.size(0), n = x.size(1), k = m.options().topk;
  std::vector<torch::Tensor> rows;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < n; ++i) {
      auto xi = x[b][i];
      if (mask.defined() && !mask[b][i].item<bool>()) {
        rows.push_back(torch::zeros_like(xi));
        continue;
      }
      auto p = torch::softmax(torch::matmul(m.router()->weight, xi), 0);
      auto [tp, te] = p.topk(k);
      auto g = k == 1 ? tp : tp / tp.sum();
      auto y = torch::zeros_like(xi);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = te[j].item<int64_t>();
        auto h = torch::gelu(torch::matmul(m.expert_in(e)->weight, xi) + m.expert_in(e)->bias);
        y = y + g[j] * (torch::matmul(m.expert_out(e)->weight, h) + m.expert_out(e)->bias);
      }
      rows.push_back(y);
    }
  }
  return torch::stack(rows).view({B, n, -1});
}

std::vector<torch::Tensor> grads_of(MoeFeedForwardImpl& m, const torch::Tensor& x) {
  std::vector<torch::Tensor> g;
  for (const auto& p : m.parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  g.push_back(x.grad().clone());
  return g;
}

void zero_grads(MoeFeedForwardImpl& m, torch::Tensor& x) {
  for (auto& p : m.parameters())
    if (p.grad().defined()) p.mutable_grad().zero_();
  x.mutable_grad().zero_();
}

class MoeReference : public ::testing::TestWithParam<int64_t> {};

TEST_P(MoeReference, OutputsAndAllGradientsMatchATokenLoopUnderCapacity) {
  const int64_t k = GetParam();
  torch::manual_seed(3);
  MoeFeedForward moe(8, 16, moe_opts(4, k, 100.0));  // capacity never reached
  auto x = torch::randn({2, 7, 8}).requires_grad_(true);
  auto mask = torch::ones({2, 7}, torch::kBool);
  mask[1].slice(0, 4).fill_(false);
  auto r = torch::randn({2, 7, 8}) * mask.unsqueeze(-1);

  auto y = moe->forward(x, mask);
  EXPECT_EQ(moe->last_dropped(), 0);
  (y * r).sum().backward();
  auto g = grads_of(*moe, x);
  zero_grads(*moe, x);
  auto y_ref = moe_reference(*moe, x, mask);
  (y_ref * r).sum().backward();
  auto g_ref = grads_of(*moe, x);

  EXPECT_TRUE(torch::allclose(y, y_ref, 1e-5, 1e-6)) << (y - y_ref).abs().max().item<double>();
  auto names = moe->named_parameters().keys();
  names.push_back("x");
  ASSERT_EQ(g.size(), g_ref.size());
  for (size_t i = 0; i < g.size(); ++i)
    EXPECT_TRUE(torch::allclose(g[i], g_ref[i], 1e-4, 1e-6))
        << names[i] << " max |diff| " << (g[i] - g_ref[i]).abs().max().item<double>();
  // The router learns through the gates.
  EXPECT_GT(moe->router()->weight.grad().abs().sum().item<double>(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(TopK, MoeReference, ::testing::Values(1, 2),
                         [](const auto& info) { return "top" + std::to_string(info.param); });

TEST(Moe, TokensOverCapacityGetZeroOutputAndFollowTheResidual) {
  torch::manual_seed(5);
  MoeFeedForward moe(8, 16, moe_opts(2, 1, 0.5));  // C = ceil(0.5 * 1 * 8 / 2) = 2 slots per expert
  {
    torch::NoGradGuard g;
    moe->router()->weight.zero_();
    moe->router()->weight[0][0] = 10.0;  // every token with x_0 > 0 prefers expert 0
  }
  auto x = torch::randn({1, 8, 8});
  x.select(2, 0).abs_().add_(0.5);
  auto y = moe->forward(x, torch::Tensor());
  EXPECT_EQ(moe->last_capacity(), 2);
  EXPECT_EQ(moe->last_dropped(), 6);
  EXPECT_EQ(moe->last_load(), (std::vector<int64_t>{2, 0}));
  auto ref = moe_reference(*moe, x, torch::Tensor());
  // The first two tokens (slot order = token order) ran on expert 0; the rest got exactly 0.
  EXPECT_TRUE(torch::allclose(y[0].slice(0, 0, 2), ref[0].slice(0, 0, 2), 1e-5, 1e-6));
  EXPECT_GT(y[0].slice(0, 0, 2).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(y[0].slice(0, 2).abs().max().item<double>(), 0.0);
  // In a backbone block the dropped tokens leave the feed-forward unchanged: x + 0.
}

TEST(Moe, BalanceLossIsESumFTimesPAndHasGradients) {
  torch::manual_seed(11);
  MoeOptions o = moe_opts(4, 1, 2.0);
  o.aux_weight = 0.03;
  MoeFeedForward moe(8, 16, o);
  auto x = torch::randn({3, 10, 8});
  auto mask = torch::ones({3, 10}, torch::kBool);
  mask[2].slice(0, 6).fill_(false);
  moe->forward(x, mask);
  auto loss = moe->balance_loss();
  ASSERT_TRUE(loss.defined());

  auto xt = x.reshape({-1, 8}).index_select(0, mask.reshape({-1}).nonzero().view({-1}));
  auto p = torch::softmax(torch::matmul(xt, moe->router()->weight.t()), -1).detach();
  auto f = torch::zeros({4});
  auto top = p.argmax(-1);
  for (int64_t t = 0; t < top.size(0); ++t) f[top[t].item<int64_t>()] += 1.0 / static_cast<double>(top.size(0));
  const double expected = 4.0 * (f * p.mean(0)).sum().item<double>();
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5);
  EXPECT_NEAR(moe->aux_loss().item<double>(), 0.03 * expected, 1e-6);

  loss.backward();
  ASSERT_TRUE(moe->router()->weight.grad().defined());
  EXPECT_GT(moe->router()->weight.grad().abs().sum().item<double>(), 0.0);
}

// A 2-layer tabular transformer with moe feed-forwards of 4 experts (`key`, `value`: one more moe option), and a batch
// of 16 rows for it.
std::shared_ptr<Model> moe_tabular_model(const std::string& key, const std::string& value, uint64_t seed) {
  Config c = test::fixture_config("transformer");
  c.set("ffn_layers", "moe", "test");
  c.set("n_layers", "2", "test");
  c.set("moe_experts", "4", "test");
  c.set(key, value, "test");
  torch::manual_seed(seed);
  return make_tabular_model(parse_run_spec(c).model, InputSchema{2, {3, 4}, 1});
}

Batch tabular_batch() {
  Batch b;
  b.num = torch::randn({16, 2});
  b.cat = torch::stack({torch::randint(3, {16}), torch::randint(4, {16})}, 1);
  b.y = torch::randn({16});
  return b;
}

TEST(Moe, BackboneAuxLossReachesTheObjective) {
  auto model = moe_tabular_model("moe_aux_weight", "0.5", 2);
  BackboneImpl* bb = model->backbone();
  ASSERT_TRUE(bb && bb->has_moe());
  EXPECT_EQ(bb->ffn_units(0), 0);
  Batch b = tabular_batch();
  ComputeObjective objective(*model, ComputeSchedule{});
  EXPECT_TRUE(objective.active());
  model->forward(b);
  auto aux = bb->aux_loss();
  ASSERT_TRUE(aux.defined());
  const double expected = 0.5 * (bb->moe(0)->balance_loss() + bb->moe(1)->balance_loss()).item<double>();
  EXPECT_NEAR(aux.item<double>(), expected, 1e-6);
  auto task = torch::tensor(1.0);
  EXPECT_NEAR(objective.objective(task, 16).item<double>(), 1.0 + expected, 1e-6);
  // Pruning skips the moe layers and refuses them when asked directly.
  for (const auto& g : model_prune_groups(*model)) EXPECT_NE(g.kind, "ffn") << g.key;
  EXPECT_NE(test::error_of([&] { bb->prune_ffn(0, {0}); }).find("mixture of experts"), std::string::npos);
}

// Assignments over capacity do not run, and the realised FLOPs the trainer reports leave them out: they equal what
// the counter measured over the whole model's forward.
TEST(Moe, RealisedFlopsLeaveOutDroppedAssignmentsAndMatchTheCounter) {
  auto model = moe_tabular_model("moe_capacity", "0.3", 3);
  model->eval();
  BackboneImpl* bb = model->backbone();
  ASSERT_TRUE(bb && bb->has_moe());
  Batch b = tabular_batch();
  ComputeObjective objective(*model, ComputeSchedule{});
  double measured;
  {
    torch::NoGradGuard g;
    FlopCounter counter;
    model->forward(b);
    measured = counter.total();
  }
  ASSERT_GT(bb->moe(0)->last_dropped() + bb->moe(1)->last_dropped(), 0);
  EXPECT_GT(bb->moe_dropped_flops(), 0.0);
  EXPECT_NEAR(objective.realised_per_example(16) * 16, measured, 1e-9 * measured);
  EXPECT_LT(objective.realised_per_example(16), model->flops_per_example());
}

TEST(Moe, MeasuredFlopsPerTokenAreFlatInEAtTop1AndMatchTheAnalyticCount) {
  const int64_t d = 128, h = 512, T = 64;
  std::vector<double> per_token;
  for (int64_t E : {4, 8, 16}) {
    torch::manual_seed(1);
    MoeFeedForward moe(d, h, moe_opts(E, 1, static_cast<double>(E)));  // C = T: nothing dropped
    auto x = torch::randn({2, T / 2, d});
    torch::NoGradGuard g;
    FlopCounter counter;
    moe->forward(x, torch::Tensor());
    const double measured = counter.total();
    EXPECT_EQ(moe->last_dropped(), 0);
    EXPECT_NEAR(measured, moe->flops(T), 1e-9 * measured) << "E = " << E;
    EXPECT_NEAR(measured, moe->last_flops(), 1e-9 * measured) << "E = " << E;
    per_token.push_back(measured / T);
    std::cout << "[moe flops] E = " << E << ", top-1, d = " << d << ", h = " << h << ": " << measured / T
              << " FLOPs per token (experts " << moe->expert_flops_per_token() << ", router " << 2 * d * E << ")\n";
  }
  for (double f : per_token) EXPECT_NEAR(f / per_token[0], 1.0, 0.02);
}

TEST(Moe, PaddingIsNeverRoutedAndASequenceAloneEqualsItselfInAPaddedBatch) {
  torch::manual_seed(9);
  for (int64_t k : {1, 2}) {
    MoeFeedForward moe(8, 16, moe_opts(4, k, 100.0));
    moe->eval();
    torch::NoGradGuard g;
    const std::vector<int64_t> lengths{5, 11, 3};
    auto x = torch::randn({3, 11, 8});
    auto mask = torch::zeros({3, 11}, torch::kBool);
    for (int64_t b = 0; b < 3; ++b) {
      mask[b].slice(0, 0, lengths[b]).fill_(true);
      x[b].slice(0, lengths[b]).fill_(1e3);
    }
    auto y = moe->forward(x, mask);
    EXPECT_EQ(moe->last_tokens(), 19);
    int64_t load = 0;
    for (auto c : moe->last_load()) load += c;
    EXPECT_EQ(load, 19 * k);
    EXPECT_EQ((y * (~mask).unsqueeze(-1)).abs().max().item<double>(), 0.0);
    for (int64_t b = 0; b < 3; ++b) {
      auto alone = moe->forward(x[b].slice(0, 0, lengths[b]).unsqueeze(0), torch::Tensor());
      EXPECT_TRUE(torch::allclose(alone[0], y[b].slice(0, 0, lengths[b]), 1e-5, 1e-6)) << "k " << k << " seq " << b;
    }
  }
}

// ---- hybrids

RunSpec hybrid_spec(const std::string& layers, const std::string& ffn_layers = "") {
  Config c = test::fixture_config("mamba2");
  c.set("layers", layers, "test");
  if (!ffn_layers.empty()) c.set("ffn_layers", ffn_layers, "test");
  c.set("d_state", "8", "test");
  return parse_run_spec(c);
}

TEST(Hybrid, BuildsTheListedMixersInOrderWithTheirOwnOptions) {
  const RunSpec spec = hybrid_spec("mamba2,transformer,rwkv,mamba2", "dense,moe,dense,moe");
  const BackboneOptions& o = spec.model.backbone;
  EXPECT_EQ(o.n_layers, 4);
  EXPECT_EQ(o.layers, (std::vector<std::string>{"mamba2", "attention", "rwkv", "mamba2"}));
  torch::manual_seed(0);
  Backbone bb(o);
  ASSERT_EQ(bb->n_layers(), 4);
  for (int64_t l = 0; l < 4; ++l) {
    auto expect = make_mixer(o.layers[static_cast<size_t>(l)], o.layer_options(l));
    EXPECT_EQ(typeid(*bb->mixers()[static_cast<size_t>(l)]).name(), typeid(*expect).name()) << "layer " << l;
    EXPECT_EQ(static_cast<bool>(bb->moe(l)), l % 2 == 1) << "layer " << l;
  }
  EXPECT_EQ(bb->mixers()[0]->own_options().at("d_state"), 8);  // mamba2's own key reached the layer
  EXPECT_EQ(bb->ffn_units(0), 2 * 16);
  EXPECT_EQ(bb->ffn_units(1), 0);
  // Forward, and the analytic count equals the measured one (no assignment dropped at the default capacity when
  // routing is balanced is not guaranteed, so measure with a capacity that never binds).
  BackboneOptions wide = o;
  wide.moe.capacity = 100.0;
  Backbone bw(wide);
  auto x = torch::randn({2, 12, 16});
  torch::NoGradGuard g;
  FlopCounter counter;
  auto y = bw->forward(x, torch::Tensor());
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_NEAR(counter.total() / 2.0, bw->flops(12), 1e-6 * bw->flops(12));
}

TEST(Hybrid, YamlListSyntaxAndNLayersFollowTheList) {
  auto dir = test::temp_dir("hybrid_yaml");
  {
    std::ofstream f(dir / "h.yaml");
    f << "model: mamba2\nn_layers: 2\nlayers: [mamba2, mamba2, attention]\nffn_layers: [moe]\nshort_conv: 3\n";
  }
  Config c = test::fixture_config("mamba2");
  c.load_yaml_file((dir / "h.yaml").string());
  const RunSpec spec = parse_run_spec(c);
  EXPECT_EQ(spec.model.backbone.n_layers, 3);
  EXPECT_EQ(spec.model.backbone.layers, (std::vector<std::string>{"mamba2", "mamba2", "attention"}));
  EXPECT_TRUE(spec.model.backbone.layer_moe(2));
  EXPECT_EQ(spec.model.backbone.short_conv, 3);
}

TEST(Hybrid, RejectsAnUnknownMixerWithTheRegisteredNames) {
  const std::string err = test::error_of([] { hybrid_spec("mamba2,mambo,attention"); });
  EXPECT_NE(err.find("'mambo'"), std::string::npos) << err;
  EXPECT_NE(err.find("registered:"), std::string::npos) << err;
  for (const auto& name : mixer_names()) EXPECT_NE(err.find(name), std::string::npos) << err;
  EXPECT_NE(test::error_of([] { hybrid_spec("mamba2,attention", "dense,moe,dense"); }).find("ffn_layers"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { hybrid_spec("mamba2", "sparse"); }).find("sparse"), std::string::npos);
  // Built directly, an unknown name is refused by the registry with the list of names.
  BackboneOptions o;
  o.layers = {"attention", "nope"};
  EXPECT_NE(test::error_of([&] { Backbone b(o); }).find("registered:"), std::string::npos);
}

TEST(Hybrid, BatchInvarianceWithShortConvAndMoe) {
  BackboneOptions o;
  o.mixer_options.d_model = 16;
  o.mixer_options.n_heads = 2;
  o.layers = {"mamba2", "attention"};
  o.ffn_layers = {"moe"};
  o.moe.capacity = 100.0;
  o.short_conv = 4;
  torch::manual_seed(4);
  Backbone bb(o);
  bb->eval();
  torch::NoGradGuard g;
  const std::vector<int64_t> lengths{9, 20, 4};
  auto x = torch::randn({3, 20, 16});
  auto mask = torch::zeros({3, 20}, torch::kBool);
  for (int64_t b = 0; b < 3; ++b) {
    mask[b].slice(0, 0, lengths[b]).fill_(true);
    x[b].slice(0, lengths[b]).fill_(1e3);
  }
  auto y = bb->forward(x, mask);
  for (int64_t b = 0; b < 3; ++b) {
    auto alone = bb->forward(x[b].slice(0, 0, lengths[b]).unsqueeze(0), torch::Tensor());
    auto in_batch = y[b].slice(0, 0, lengths[b]).unsqueeze(0);
    EXPECT_TRUE(torch::allclose(alone, in_batch, 1e-4, 1e-5))
        << "sequence " << b << " max |diff| " << (alone - in_batch).abs().max().item<double>();
  }
}

// ---- short convolution

TEST(ShortConv, IsCausalAndCountedByTheFlopCounter) {
  torch::manual_seed(6);
  ShortConv conv(8, 4);
  auto x = torch::randn({2, 12, 8});
  torch::NoGradGuard g;
  auto y1 = conv->forward(x, torch::Tensor());
  for (int64_t i : {0, 5, 11}) {
    auto x2 = x.clone();
    x2.slice(1, i + 1).normal_();
    auto y2 = conv->forward(x2, torch::Tensor());
    EXPECT_TRUE(torch::equal(y1.slice(1, 0, i + 1), y2.slice(1, 0, i + 1))) << "position " << i;
    if (i + 1 < 12) EXPECT_FALSE(torch::equal(y1.slice(1, i + 1), y2.slice(1, i + 1)));
  }
  FlopCounter counter;
  conv->forward(x, torch::Tensor());
  EXPECT_NEAR(counter.total() / 2.0, conv->flops(12), 1e-6);

  // A causal backbone with the convolution stays causal.
  BackboneOptions o;
  o.mixer_options.d_model = 8;
  o.mixer_options.n_heads = 2;
  o.mixer_options.causal = true;
  o.short_conv = 3;
  o.layers = {"attention", "mamba2"};
  Backbone bb(o);
  auto z1 = bb->forward(x, torch::Tensor());
  auto x3 = x.clone();
  x3.slice(1, 7).normal_();
  auto z3 = bb->forward(x3, torch::Tensor());
  EXPECT_TRUE(torch::allclose(z1.slice(1, 0, 7), z3.slice(1, 0, 7), 1e-5, 1e-6));
}

}  // namespace
}  // namespace cerebra
