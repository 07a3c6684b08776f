// The efficient-attention mixers (longformer, linformer, performer, aft): shapes and finite gradients, padding
// invariance, causality, analytic FLOPs against the measured counter, Longformer against dense masked softmax
// attention (float64, outputs and every gradient), Performer against softmax attention (loosely), Linformer's
// length limit and missing causal form, and their config keys.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/models/mixer.h"
#include "kernel_test_util.h"

namespace {

using cerebra::MixerOptions;
using namespace cerebra::testing;
using torch::Tensor;

struct Case {
  std::string mixer;
  bool causal;
  std::map<std::string, std::string> own;
  std::string label;
};

std::shared_ptr<cerebra::SequenceMixer> build(const Case& c, int64_t d = 16, int64_t heads = 2) {
  MixerOptions o;
  o.d_model = d;
  o.n_heads = heads;
  o.causal = c.causal;
  return cerebra::make_mixer(c.mixer, cerebra::with_own_options(c.mixer, o, c.own));
}

std::vector<Case> all_cases() {
  return {
      {"longformer", false, {{"window", "4"}, {"global_tokens", "1"}}, "longformer"},
      {"longformer", false, {{"window", "4"}, {"global_tokens", "0"}, {"dilation", "2"}}, "longformer_g0_dil2"},
      {"longformer", true, {{"window", "4"}, {"global_tokens", "2"}}, "longformer_causal"},
      {"linformer", false, {{"proj_k", "8"}, {"linformer_max_len", "128"}}, "linformer"},
      {"performer", false, {{"n_features", "16"}}, "performer"},
      {"performer", true, {{"n_features", "16"}}, "performer_causal"},
      {"aft", false, {{"aft_variant", "simple"}}, "aft_simple"},
      {"aft", true, {{"aft_variant", "simple"}}, "aft_simple_causal"},
      {"aft", false, {{"aft_variant", "local"}, {"window", "3"}}, "aft_local"},
      {"aft", true, {{"aft_variant", "local"}, {"window", "3"}}, "aft_local_causal"},
      {"aft", false, {{"aft_variant", "full"}, {"aft_max_len", "128"}}, "aft_full"},
      {"aft", true, {{"aft_variant", "full"}, {"aft_max_len", "128"}}, "aft_full_causal"},
      {"reformer", false, {{"lsh_rounds", "2"}, {"lsh_buckets", "4"}, {"lsh_chunk", "4"}}, "reformer"},
      {"reformer", false, {{"lsh_rounds", "1"}, {"lsh_buckets", "1"}, {"lsh_chunk", "8"}}, "reformer_one_bucket"},
  };
}

// AFT-local starts with a zero position bias (no local term); give it one so the tests see the local path.
void perturb(cerebra::SequenceMixer& m) {
  torch::NoGradGuard g;
  for (auto& p : m.named_parameters())
    if (p.key() == "pos_bias" || p.key() == "pair_bias") p.value().normal_(0.0, 0.5);
}

class EfficientMixer : public ::testing::TestWithParam<Case> {};

TEST_P(EfficientMixer, ShapeAndFiniteGradients) {
  const Case c = GetParam();
  torch::manual_seed(1);
  auto mixer = build(c);
  perturb(*mixer);
  const int64_t B = 3, n = 21, d = 16;
  auto mask = torch::ones({B, n}, torch::kBool);
  mask[1].narrow(0, 15, n - 15).fill_(false);
  mask[2].narrow(0, 9, n - 9).fill_(false);
  auto x = torch::randn({B, n, d}).requires_grad_();
  auto y = mixer->forward(x, mask);
  ASSERT_EQ(y.sizes(), x.sizes());
  const Tensor w = mask.unsqueeze(-1).to(torch::kFloat);
  EXPECT_TRUE(torch::isfinite(y * w).all().item<bool>());
  (y * w).pow(2).sum().backward();
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
  EXPECT_GT(max_abs(x.grad()), 1e-6);
  for (const auto& p : mixer->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  // Also without a mask.
  auto y2 = mixer->forward(x.detach(), {});
  EXPECT_EQ(y2.sizes(), x.sizes());
  EXPECT_TRUE(torch::isfinite(y2).all().item<bool>());
}

TEST_P(EfficientMixer, PaddedKeysDoNotReachRealQueries) {
  const Case c = GetParam();
  torch::manual_seed(2);
  auto mixer = build(c);
  perturb(*mixer);
  mixer->eval();
  torch::NoGradGuard g;
  const int64_t n1 = 13, n2 = 30, d = 16;
  auto alone = torch::randn({1, n1, d});
  auto batch = torch::randn({2, n2, d}) * 3.0;  // padding holds large values
  batch[0].narrow(0, 0, n1).copy_(alone[0]);
  auto mask = torch::ones({2, n2}, torch::kBool);
  mask[0].narrow(0, n1, n2 - n1).fill_(false);
  auto y1 = mixer->forward(alone, torch::ones({1, n1}, torch::kBool));
  auto y1u = mixer->forward(alone, {});
  auto y2 = mixer->forward(batch, mask);
  const Diff dd = diff(y1[0], y2[0].narrow(0, 0, n1));
  print_diff(c.label + " alone vs padded", dd);
  EXPECT_LE(dd.max, 1e-5 * std::max(1.0, max_abs(y1)));
  EXPECT_LE(diff(y1, y1u).max, 1e-5 * std::max(1.0, max_abs(y1)));
}

TEST_P(EfficientMixer, CausalOutputsIgnoreTheFuture) {
  const Case c = GetParam();
  auto mixer = build(c);
  EXPECT_EQ(mixer->is_causal(), c.causal);
  if (!c.causal) return;
  torch::manual_seed(3);
  perturb(*mixer);
  torch::NoGradGuard g;
  const int64_t n = 40, d = 16;
  for (int64_t i : {0, 5, 17, 38}) {
    auto x = torch::randn({2, n, d});
    auto x2 = x.clone();
    x2.narrow(1, i + 1, n - i - 1).normal_(0.0, 2.0);
    auto y = mixer->forward(x, {}), y2 = mixer->forward(x2, {});
    const Diff dd = diff(y.narrow(1, 0, i + 1), y2.narrow(1, 0, i + 1));
    EXPECT_LE(dd.max, 1e-5 * std::max(1.0, max_abs(y))) << "position " << i;
    EXPECT_GT(diff(y.narrow(1, i + 1, n - i - 1), y2.narrow(1, i + 1, n - i - 1)).max, 1e-4);  // not vacuous
  }
}

TEST_P(EfficientMixer, AnalyticFlopsMatchTheCounter) {
  const Case c = GetParam();
  torch::manual_seed(4);
  auto mixer = build(c, 32, 4);
  mixer->eval();
  for (int64_t n : {37, 100}) {
    const int64_t B = 2;
    auto x = torch::randn({B, n, 32});
    double measured;
    {
      torch::NoGradGuard g;
      cerebra::FlopCounter counter;
      mixer->forward(x, {});
      measured = counter.total();
    }
    const double analytic = B * mixer->flops(n);
    std::printf("  %s n=%ld: measured %.0f analytic %.0f\n", c.label.c_str(), static_cast<long>(n), measured, analytic);
    EXPECT_NEAR(measured, analytic, 1e-9 * analytic) << c.label << " n " << n;
  }
}

TEST_P(EfficientMixer, OwnOptionsAreItsConfigKeys) {
  const Case c = GetParam();
  auto mixer = build(c);
  const auto opts = mixer->own_options();
  const auto& def = cerebra::mixer_def(c.mixer);
  EXPECT_EQ(opts.size(), def.keys.size());
  for (const auto& k : def.keys) EXPECT_TRUE(opts.contains(k.name)) << c.mixer << " " << k.name;
  for (const auto& [k, v] : c.own)
    EXPECT_EQ(opts[k].is_string() ? opts[k].get<std::string>() : opts[k].dump(), v) << c.mixer << " " << k;
}

INSTANTIATE_TEST_SUITE_P(All, EfficientMixer, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.label; });

// The mixer against `reference` (plain torch ops) on the same float64 input: outputs at real positions, and the
// gradients of Σ y·w with respect to the input and every parameter.
void expect_matches_reference(cerebra::SequenceMixer& mixer, const Tensor& x0, const Tensor& mask, const Tensor& w,
                              const std::function<Tensor(const Tensor&)>& reference) {
  std::vector<Tensor> outs, grads;
  for (int ref = 0; ref < 2; ++ref) {
    auto x = x0.clone().requires_grad_();
    auto y = ref ? reference(x) : mixer.forward(x, mask);
    std::vector<Tensor> inputs = {x};
    for (auto& p : mixer.parameters()) inputs.push_back(p);
    auto g = torch::autograd::grad({(y * w).sum()}, inputs);
    outs.push_back((y * (w != 0)).detach());
    grads.insert(grads.end(), g.begin(), g.end());
  }
  expect_close_f64("output", outs[0], outs[1], 1e-10);
  const size_t k = grads.size() / 2;
  for (size_t t = 0; t < k; ++t) expect_close_f64("gradient " + std::to_string(t), grads[t], grads[k + t], 1e-10);
  EXPECT_GT(max_abs(grads[0]), 1e-3);
}

// ---- Longformer against dense masked softmax attention ---------------------------------------------------------

struct LfCase {
  bool causal;
  int64_t window, dilation, global;
};

// The mixer's function from plain torch ops: allowed(i, j) = window or global, key real; rows with no key give 0.
Tensor longformer_reference(cerebra::SequenceMixer& mixer, const Tensor& x, const Tensor& mask, const LfCase& c,
                            int64_t heads) {
  auto params = mixer.named_parameters();
  const int64_t B = x.size(0), n = x.size(1), d = x.size(2), dh = d / heads;
  auto qkv = torch::linear(x, params["qkv.weight"], params["qkv.bias"]).view({B, n, 3, heads, dh}).permute(
      {2, 0, 3, 1, 4});
  auto q = qkv[0], k = qkv[1], v = qkv[2];
  const int64_t wl = c.causal ? c.window : c.window / 2, wr = c.causal ? 0 : c.window / 2;
  const auto pos = torch::arange(n, torch::kLong);
  const auto i = pos.view({n, 1}), j = pos.view({1, n}), rel = j - i;
  Tensor band = rel.remainder(c.dilation).eq(0).logical_and(rel.ge(-wl * c.dilation)).logical_and(
      rel.le(wr * c.dilation));
  Tensor allowed = c.causal ? band.logical_or(j.lt(c.global).logical_and(j.le(i)))
                            : band.logical_or(j.lt(c.global)).logical_or(i.lt(c.global));
  allowed = allowed.view({1, 1, n, n}).logical_and(mask.view({B, 1, 1, n}));
  const auto row_any = allowed.any(-1, true);
  auto s = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh));
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity()).masked_fill(
      row_any.logical_not(), 0.0);
  auto y = torch::matmul(torch::softmax(s, -1) * row_any.to(s.scalar_type()), v).transpose(1, 2).reshape({B, n, d});
  return torch::linear(y, params["out.weight"], params["out.bias"]);
}

TEST(Longformer, EqualsDenseMaskedAttentionOnOutputsAndGradients) {
  const std::vector<LfCase> cases = {{false, 4, 1, 1}, {false, 6, 1, 3}, {false, 4, 2, 2}, {false, 0, 1, 1},
                                     {false, 8, 3, 0}, {true, 4, 1, 1},  {true, 3, 2, 3},  {true, 5, 1, 0},
                                     {false, 64, 1, 2}};
  const int64_t B = 3, n = 29, d = 16, heads = 2;
  for (const LfCase& c : cases) {
    SCOPED_TRACE("causal " + std::to_string(c.causal) + " window " + std::to_string(c.window) + " dilation " +
                 std::to_string(c.dilation) + " global " + std::to_string(c.global));
    torch::manual_seed(10 + c.window + c.global);
    MixerOptions o;
    o.d_model = d;
    o.n_heads = heads;
    o.causal = c.causal;
    auto mixer = cerebra::make_mixer(
        "longformer", cerebra::with_own_options("longformer", o,
                                                {{"window", std::to_string(c.window)},
                                                 {"dilation", std::to_string(c.dilation)},
                                                 {"global_tokens", std::to_string(c.global)}}));
    mixer->to(torch::kDouble);
    auto mask = torch::ones({B, n}, torch::kBool);
    mask[1].narrow(0, 20, n - 20).fill_(false);  // padded at the end
    mask[2][1] = false;                          // a padded global position (g > 1) and a hole
    mask[2][12] = false;
    const Tensor x0 = torch::randn({B, n, d}, torch::kDouble);
    const Tensor w = torch::randn({B, n, d}, torch::kDouble) * mask.unsqueeze(-1).to(torch::kDouble);
    expect_matches_reference(*mixer, x0, mask, w,
                             [&](const Tensor& x) { return longformer_reference(*mixer, x, mask, c, heads); });
  }
}

// ---- Performer approximates softmax attention -------------------------------------------------------------------

TEST(Performer, ManyFeaturesApproximateSoftmaxAttention) {
  const int64_t B = 2, n = 24, d = 16, heads = 2, dh = d / heads;
  for (bool causal : {false, true}) {
    torch::manual_seed(causal ? 21 : 20);
    MixerOptions o;
    o.d_model = d;
    o.n_heads = heads;
    o.causal = causal;
    auto mixer = cerebra::make_mixer("performer", cerebra::with_own_options("performer", o, {{"n_features", "2048"}}));
    auto few = cerebra::make_mixer("performer", cerebra::with_own_options("performer", o, {{"n_features", "4"}}));
    {
      torch::NoGradGuard g;
      for (auto& p : few->named_parameters()) p.value().copy_(mixer->named_parameters()[p.key()]);
    }
    torch::NoGradGuard g;
    auto params = mixer->named_parameters();
    const Tensor x = torch::randn({B, n, d});
    auto qkv = torch::linear(x, params["qkv.weight"], params["qkv.bias"]).view({B, n, 3, heads, dh}).permute(
        {2, 0, 3, 1, 4});
    auto s = torch::matmul(qkv[0], qkv[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(dh));
    if (causal)
      s = s.masked_fill(torch::ones({n, n}, torch::kBool).triu(1), -std::numeric_limits<double>::infinity());
    auto ya = torch::matmul(torch::softmax(s, -1), qkv[2]).transpose(1, 2).reshape({B, n, d});
    const Tensor ref = torch::linear(ya, params["out.weight"], params["out.bias"]);
    const double err = (mixer->forward(x, {}) - ref).norm().item<double>() / ref.norm().item<double>();
    const double err_few = (few->forward(x, {}) - ref).norm().item<double>() / ref.norm().item<double>();
    std::printf("  %s: relative error 2048 features %.4f, 4 features %.4f\n", causal ? "causal" : "non-causal", err,
                err_few);
    EXPECT_LT(err, 0.1);
    EXPECT_LT(err, err_few);
  }
}

TEST(Performer, RedrawDrawsNewFeaturesOnlyWhenTraining) {
  MixerOptions o;
  o.d_model = 16;
  o.n_heads = 2;
  auto x = torch::randn({1, 5, 16});
  for (bool redraw : {false, true}) {
    auto mixer = cerebra::make_mixer("performer",
                                     cerebra::with_own_options("performer", o, {{"redraw", redraw ? "true" : "false"}}));
    torch::NoGradGuard g;
    mixer->train();
    const Tensor a = mixer->forward(x, {}), b = mixer->forward(x, {});
    EXPECT_EQ(diff(a, b).max > 1e-6, redraw);
    mixer->eval();
    EXPECT_EQ(diff(mixer->forward(x, {}), mixer->forward(x, {})).max, 0.0);
  }
}

// ---- AFT-full against its definition ----------------------------------------------------------------------------

// y_i = σ(Q_i) ⊙ Σ_j exp(K_j + w_ij) V_j / Σ_j exp(K_j + w_ij) over real keys j (j <= i when causal), written out
// as a (B, n, n, d) tensor.
TEST(Aft, FullEqualsItsDefinitionOnOutputsAndGradients) {
  const int64_t B = 2, n = 17, d = 8;
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "non-causal");
    torch::manual_seed(50 + causal);
    MixerOptions o;
    o.d_model = d;
    o.n_heads = 2;
    o.causal = causal;
    auto mixer = cerebra::make_mixer(
        "aft", cerebra::with_own_options("aft", o, {{"aft_variant", "full"}, {"aft_max_len", "24"}}));
    perturb(*mixer);
    mixer->to(torch::kDouble);
    auto params = mixer->named_parameters();
    auto mask = torch::ones({B, n}, torch::kBool);
    mask[1].narrow(0, 11, n - 11).fill_(false);
    mask[0][4] = false;
    const Tensor x0 = torch::randn({B, n, d}, torch::kDouble);
    const Tensor wout = torch::randn({B, n, d}, torch::kDouble) * mask.unsqueeze(-1).to(torch::kDouble);
    expect_matches_reference(*mixer, x0, mask, wout, [&](const Tensor& x) {
      const Tensor qkv = torch::linear(x, params["qkv.weight"], params["qkv.bias"]);
      const Tensor q = qkv.narrow(2, 0, d), k = qkv.narrow(2, d, d), v = qkv.narrow(2, 2 * d, d);
      const Tensor w = params["pair_bias"].narrow(0, 0, n).narrow(1, 0, n);
      Tensor logits = k.unsqueeze(1) + w.view({1, n, n, 1});  // (B, i, j, d)
      Tensor allowed = mask.view({B, 1, n, 1}).expand({B, n, n, 1});
      if (causal) allowed = allowed.logical_and(torch::ones({n, n}, torch::kBool).tril().view({1, n, n, 1}));
      const Tensor a = torch::softmax(logits.masked_fill(allowed.logical_not(), -1e300), 2);
      return torch::linear(torch::sigmoid(q) * (a * v.unsqueeze(1)).sum(2), params["out.weight"], params["out.bias"]);
    });
    auto x = x0.clone();
    (mixer->forward(x, mask) * wout).sum().backward();
    EXPECT_GT(max_abs(params["pair_bias"].grad()), 1e-6);  // the pairwise bias learns
  }
}

TEST(Aft, FullRejectsSequencesLongerThanMaxLen) {
  MixerOptions o;
  o.d_model = 8;
  o.n_heads = 2;
  auto mixer = cerebra::make_mixer("aft", cerebra::with_own_options("aft", o, {{"aft_variant", "full"},
                                                                                {"aft_max_len", "10"}}));
  EXPECT_NO_THROW(mixer->forward(torch::randn({1, 10, 8}), {}));
  try {
    mixer->forward(torch::randn({1, 11, 8}), {});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("aft_max_len"), std::string::npos) << e.what();
  }
}

// ---- Reformer against dense masked attention ---------------------------------------------------------------------

// The mixer's function from plain torch ops, one dense n x n score matrix per head and round: the same buckets (from
// the mixer's rotations), allowed(i, j) = key j real and in i's sorted chunk or the one before, i's own key at -1e5;
// the rounds combined by their log-sum-exps.
Tensor reformer_reference(cerebra::SequenceMixer& mixer, const Tensor& x, const Tensor& mask, int64_t heads,
                          int64_t rounds, int64_t buckets, int64_t chunk) {
  auto params = mixer.named_parameters();
  const int64_t B = x.size(0), n = x.size(1), d = x.size(2), dh = d / heads;
  auto split = [&](const Tensor& t) { return t.view({B, n, heads, dh}).transpose(1, 2); };
  const Tensor q = split(torch::linear(x, params["qk.weight"], params["qk.bias"]));
  const Tensor v = split(torch::linear(x, params["v.weight"], params["v.bias"]));
  const Tensor k = q / q.norm(2, -1, true).clamp_min(1e-6);
  Tensor bucket = torch::zeros({B, heads, n, rounds}, torch::kLong);
  if (buckets > 1) {
    const Tensor proj = torch::matmul(k.detach(), mixer.named_buffers()["rotations"]).view({B, heads, n, rounds,
                                                                                           buckets / 2});
    bucket = torch::cat({proj, -proj}, -1).argmax(-1);
  }
  bucket = bucket.masked_fill(mask.logical_not().view({B, 1, n, 1}), buckets);
  const Tensor pos = torch::arange(n, torch::kLong);
  const Tensor s = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh));  // (B, h, n, n)
  std::vector<Tensor> outs, lses;
  for (int64_t r = 0; r < rounds; ++r) {
    const Tensor order = (bucket.select(-1, r) * n + pos).argsort(int64_t{-1}, false);          // (B, h, n)
    const Tensor rank = order.argsort(int64_t{-1}, false);                                      // sorted position of each token
    const Tensor ch = rank.div(chunk, "floor");                                 // its chunk
    const Tensor ci = ch.unsqueeze(-1), cj = ch.unsqueeze(-2);
    const Tensor allowed = cj.eq(ci).logical_or(cj.eq(ci - 1)).logical_and(mask.view({B, 1, 1, n}));
    Tensor sr = s.masked_fill(allowed.logical_not(), -1e9);
    sr = sr.masked_fill(torch::eye(n, torch::kBool).view({1, 1, n, n}).logical_and(allowed), -1e5);
    const Tensor lse = sr.logsumexp(-1, true);
    outs.push_back(torch::matmul(torch::exp(sr - lse), v));
    lses.push_back(lse);
  }
  const Tensor w = torch::softmax(torch::stack(lses), 0);
  const Tensor y = (w * torch::stack(outs)).sum(0).transpose(1, 2).reshape({B, n, d});
  return torch::linear(y, params["out.weight"], params["out.bias"]);
}

std::shared_ptr<cerebra::SequenceMixer> reformer(int64_t d, int64_t heads, int64_t rounds, int64_t buckets,
                                                 int64_t chunk) {
  MixerOptions o;
  o.d_model = d;
  o.n_heads = heads;
  return cerebra::make_mixer("reformer", cerebra::with_own_options("reformer", o,
                                                                   {{"lsh_rounds", std::to_string(rounds)},
                                                                    {"lsh_buckets", std::to_string(buckets)},
                                                                    {"lsh_chunk", std::to_string(chunk)}}));
}

TEST(Reformer, EqualsDenseMaskedAttentionOnOutputsAndGradients) {
  struct RfCase {
    int64_t rounds, buckets, chunk;
  };
  const int64_t B = 3, n = 29, d = 16, heads = 2;
  for (const RfCase& c : std::vector<RfCase>{{1, 4, 4}, {2, 4, 4}, {3, 8, 5}, {2, 2, 29}, {1, 1, 7}, {2, 6, 64}}) {
    SCOPED_TRACE("rounds " + std::to_string(c.rounds) + " buckets " + std::to_string(c.buckets) + " chunk " +
                 std::to_string(c.chunk));
    torch::manual_seed(30 + c.rounds + c.buckets);
    auto mixer = reformer(d, heads, c.rounds, c.buckets, c.chunk);
    mixer->to(torch::kDouble);
    auto mask = torch::ones({B, n}, torch::kBool);
    mask[1].narrow(0, 20, n - 20).fill_(false);  // padded at the end
    mask[2][3] = false;                          // holes
    mask[2][12] = false;
    const Tensor x0 = torch::randn({B, n, d}, torch::kDouble);
    const Tensor w = torch::randn({B, n, d}, torch::kDouble) * mask.unsqueeze(-1).to(torch::kDouble);
    expect_matches_reference(*mixer, x0, mask, w, [&](const Tensor& x) {
      return reformer_reference(*mixer, x, mask, heads, c.rounds, c.buckets, c.chunk);
    });
  }
}

// One bucket, one round and a chunk covering the sequence: full shared-QK attention (no hashing, no chunking).
TEST(Reformer, OneBucketOneRoundIsFullSharedQKAttention) {
  const int64_t B = 2, n = 19, d = 16, heads = 4, dh = d / heads;
  torch::manual_seed(40);
  auto mixer = reformer(d, heads, 1, 1, 32);
  mixer->to(torch::kDouble);
  torch::NoGradGuard g;
  auto params = mixer->named_parameters();
  const Tensor x = torch::randn({B, n, d}, torch::kDouble);
  auto split = [&](const Tensor& t) { return t.view({B, n, heads, dh}).transpose(1, 2); };
  const Tensor q = split(torch::linear(x, params["qk.weight"], params["qk.bias"]));
  const Tensor v = split(torch::linear(x, params["v.weight"], params["v.bias"]));
  const Tensor k = torch::nn::functional::normalize(q, torch::nn::functional::NormalizeFuncOptions().dim(-1));
  Tensor s = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh));
  s = s.masked_fill(torch::eye(n, torch::kBool), -1e5);
  const Tensor ref = torch::linear(torch::matmul(torch::softmax(s, -1), v).transpose(1, 2).reshape({B, n, d}),
                                   params["out.weight"], params["out.bias"]);
  expect_close_f64("output", mixer->forward(x, {}), ref, 1e-10);
  // A short chunk is not full attention any more: the test can tell.
  auto chunked = reformer(d, heads, 1, 1, 4);
  chunked->to(torch::kDouble);
  for (auto& p : chunked->named_parameters()) p.value().copy_(params[p.key()]);
  EXPECT_GT(diff(chunked->forward(x, {}), ref).max, 1e-4);
}

TEST(Reformer, HasNoCausalFormAndRejectsBadOptions) {
  MixerOptions o;
  o.d_model = 16;
  o.n_heads = 2;
  o.causal = true;
  try {
    cerebra::make_mixer("reformer", o);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no causal form"), std::string::npos) << e.what();
  }
  EXPECT_THROW(reformer(16, 2, 1, 3, 4), c10::Error);  // odd bucket count
  EXPECT_THROW(reformer(16, 2, 0, 4, 4), c10::Error);
  EXPECT_THROW(reformer(16, 2, 1, 4, 0), c10::Error);
}

// ---- Linformer: length limit, no causal form ---------------------------------------------------------------------

TEST(Linformer, RejectsSequencesLongerThanMaxLen) {
  MixerOptions o;
  o.d_model = 16;
  o.n_heads = 2;
  auto mixer = cerebra::make_mixer("linformer",
                                   cerebra::with_own_options("linformer", o, {{"linformer_max_len", "16"}}));
  EXPECT_NO_THROW(mixer->forward(torch::randn({1, 16, 16}), {}));
  try {
    mixer->forward(torch::randn({1, 17, 16}), {});
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("max_len"), std::string::npos) << msg;
    EXPECT_NE(msg.find("17"), std::string::npos) << msg;
  }
}

TEST(Linformer, HasNoCausalForm) {
  MixerOptions o;
  o.d_model = 16;
  o.n_heads = 2;
  o.causal = true;
  try {
    cerebra::make_mixer("linformer", o);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no causal form"), std::string::npos) << e.what();
  }
}

// ---- config ------------------------------------------------------------------------------------------------------

TEST(EfficientAttentionConfig, OwnOptionsFromOverridesAndUnknownKeysThrow) {
  MixerOptions common;
  common.d_model = 16;
  common.n_heads = 2;
  auto lf = cerebra::make_mixer("longformer", cerebra::with_own_options("longformer", common, {{"window", "32"}}));
  EXPECT_EQ(lf->own_options()["window"].get<int64_t>(), 32);
  EXPECT_EQ(lf->own_options()["global_tokens"].get<int64_t>(), 1);
  EXPECT_EQ(lf->own_options()["dilation"].get<int64_t>(), 1);
  auto aft = cerebra::make_mixer("aft", cerebra::with_own_options("aft", common, {{"aft_variant", "local"},
                                                                                  {"window", "5"}}));
  EXPECT_EQ(aft->own_options()["window"].get<int64_t>(), 5);
  EXPECT_EQ(aft->own_options()["aft_variant"].get<std::string>(), "local");
  auto pf = cerebra::make_mixer("performer", cerebra::with_own_options("performer", common, {}));
  EXPECT_EQ(pf->own_options()["n_features"].get<int64_t>(), 64);
  EXPECT_EQ(pf->own_options()["redraw"].get<bool>(), false);
  auto lin = cerebra::make_mixer("linformer", cerebra::with_own_options("linformer", common, {}));
  EXPECT_EQ(lin->own_options()["proj_k"].get<int64_t>(), 64);
  EXPECT_EQ(lin->own_options()["linformer_max_len"].get<int64_t>(), 4096);
  for (const char* name : {"longformer", "linformer", "performer", "aft"})
    EXPECT_THROW(cerebra::with_own_options(name, common, {{"no_such_option", "3"}}), cerebra::ConfigError) << name;
  EXPECT_THROW(cerebra::with_own_options("aft", common, {{"aft_variant", "global"}}), cerebra::ConfigError);
  EXPECT_THROW(cerebra::with_own_options("longformer", common, {{"window", "wide"}}), cerebra::ConfigError);
}

}  // namespace
