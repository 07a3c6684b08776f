// The RWKV-4 WKV kernel (ops/wkv.h) against its torch-ops reference and the direct formula: outputs and the
// gradients of w, u, k, v in float64, float32 against float64 truth, keys far beyond float's exp range, finite
// differences for the hand-written backward, the one-step form, thread counts and the FLOPs it reports.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "cerebra/core/flop_counter.h"
#include "cerebra/ops/wkv.h"
#include "kernel_test_util.h"

namespace {

using namespace cerebra::testing;
using cerebra::ops::wkv;
using cerebra::ops::wkv_ref;
using torch::Tensor;

struct Inputs {
  Tensor w, u, k, v;
  std::vector<Tensor> all() const { return {w, u, k, v}; }
};

// Leaves of dtype `dt`: w ~ decay parameters of RWKV's range, u ~ N(0, 1), k ~ N(0, k_scale), v ~ N(0, 1).
Inputs make_inputs(int64_t B, int64_t T, int64_t C, torch::Dtype dt, double k_scale = 1.0) {
  auto o = torch::TensorOptions().dtype(torch::kDouble);
  Inputs in{torch::rand({C}, o) * 6 - 4, torch::randn({C}, o), torch::randn({B, T, C}, o) * k_scale,
            torch::randn({B, T, C}, o)};
  for (Tensor* t : {&in.w, &in.u, &in.k, &in.v}) *t = t->to(dt).requires_grad_();
  return in;
}

Inputs cast(const Inputs& in, torch::Dtype dt) {
  return {in.w.detach().to(dt).requires_grad_(), in.u.detach().to(dt).requires_grad_(),
          in.k.detach().to(dt).requires_grad_(), in.v.detach().to(dt).requires_grad_()};
}

using Op = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, const Tensor&);

// Output and gradients of Σ y ∘ gy with respect to (w, u, k, v).
std::vector<Tensor> run(Op op, const Inputs& in, const Tensor& gy) {
  auto y = op(in.w, in.u, in.k, in.v);
  const auto inputs = in.all();
  // allow_unused: with T = 1 the reference never uses w (the decay only acts from the second token on).
  auto g = torch::autograd::grad({(y * gy.to(y.scalar_type())).sum()}, inputs, {}, false, false, true);
  for (size_t i = 0; i < g.size(); ++i)
    if (!g[i].defined()) g[i] = torch::zeros_like(inputs[i]);
  g.insert(g.begin(), y.detach());
  return g;
}

const char* kNames[] = {"y", "dw", "du", "dk", "dv"};

// y_t = Σ_i W[t, i] v_i / Σ_i W[t, i], W[t, i] = e^{(t-1-i)wd + k_i} (i < t), e^{u + k_t} (i = t): the direct
// formula, float64, T x T per (b, c).
Tensor wkv_direct(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v) {
  const int64_t T = k.size(1);
  auto t = torch::arange(T, k.options()).view({T, 1, 1});
  auto i = torch::arange(T, k.options()).view({1, T, 1});
  auto wd = -torch::exp(w);                                                       // (C)
  auto past = (t - 1 - i) * wd + k.unsqueeze(1);                                  // (B, T, T, C) [t, i]
  auto now = (u + k).unsqueeze(2).expand_as(past);                                // (B, T, T, C)
  auto e = torch::where(i < t, past, torch::where(i == t, now, torch::full_like(past, -INFINITY)));
  auto W = torch::exp(e);
  return (W * v.unsqueeze(1)).sum(2) / W.sum(2);
}

TEST(WkvKernel, MatchesReferenceFloat64) {
  torch::manual_seed(0);
  // T = 1; T not a multiple of anything; B = 1 with C = 200: several channel ranges per row when run on 2+ threads.
  for (auto [B, T, C] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{2, 37, 13}, {1, 1, 5}, {3, 70, 40}, {1, 30, 200}}) {
    SCOPED_TRACE("B=" + std::to_string(B) + " T=" + std::to_string(T) + " C=" + std::to_string(C));
    auto in = make_inputs(B, T, C, torch::kDouble);
    auto gy = torch::randn({B, T, C}, torch::kDouble);
    auto got = run(&wkv, in, gy), want = run(&wkv_ref, in, gy);
    for (size_t i = 0; i < got.size(); ++i) expect_close_f64(kNames[i], got[i], want[i]);
  }
}

TEST(WkvKernel, MatchesDirectFormula) {
  torch::manual_seed(1);
  auto in = make_inputs(2, 19, 6, torch::kDouble);
  torch::NoGradGuard guard;
  expect_close_f64("y vs direct formula", wkv(in.w, in.u, in.k, in.v), wkv_direct(in.w, in.u, in.k, in.v));
}

TEST(WkvKernel, Float32AgainstFloat64Truth) {
  torch::manual_seed(2);
  // C = 70: vectors of 8 floats (AVX2) or 4 (SSE) and a scalar tail.
  auto truth_in = make_inputs(2, 50, 70, torch::kDouble);
  auto gy = torch::randn({2, 50, 70}, torch::kDouble);
  auto truth = run(&wkv_ref, truth_in, gy);
  auto in32 = cast(truth_in, torch::kFloat);
  auto got = run(&wkv, in32, gy), ref32 = run(&wkv_ref, in32, gy);
  for (size_t i = 0; i < got.size(); ++i) expect_close_f32(kNames[i], got[i], ref32[i], truth[i], i == 0 ? 2.0 : 3.0);
}

TEST(WkvKernel, LargeKeysStayFinite) {
  torch::manual_seed(3);
  // |k| up to several hundred: e^k overflows float (and e^{-k} underflows), the running maximum keeps every
  // exponential at most 1.
  auto truth_in = make_inputs(2, 40, 24, torch::kDouble, 150.0);
  truth_in.k.data().select(1, 3).fill_(400.0);
  truth_in.k.data().select(1, 7).fill_(-400.0);
  EXPECT_TRUE(torch::isinf(torch::exp(truth_in.k.detach().to(torch::kFloat))).any().item<bool>())
      << "the test should reach keys whose exponential overflows float";
  auto gy = torch::randn({2, 40, 24}, torch::kDouble);
  auto truth = run(&wkv_ref, truth_in, gy);
  auto got = run(&wkv, cast(truth_in, torch::kFloat), gy);
  auto got64 = run(&wkv, truth_in, gy);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(torch::isfinite(got[i]).all().item<bool>()) << kNames[i] << " has inf or NaN (float32)";
    EXPECT_TRUE(torch::isfinite(got64[i]).all().item<bool>()) << kNames[i] << " has inf or NaN (float64)";
    expect_close_f64(std::string(kNames[i]) + " float64", got64[i], truth[i]);
    // float32: the keys themselves are only known to ~1e-7 relative, i.e. ~4e-5 absolute at |k| = 400.
    const Diff d = diff(got[i], truth[i]);
    print_diff(std::string(kNames[i]) + " float32-truth", d);
    EXPECT_LE(d.max, 1e-3 * std::max(1.0, max_abs(truth[i]))) << kNames[i];
  }
}

TEST(WkvKernel, BackwardMatchesFiniteDifferences) {
  torch::manual_seed(4);
  auto in = make_inputs(2, 6, 3, torch::kDouble);
  auto gy = torch::randn({2, 6, 3}, torch::kDouble);
  expect_gradcheck("wkv", [&] { return (wkv(in.w, in.u, in.k, in.v) * gy).sum(); }, in.all(), {"w", "u", "k", "v"});
}

TEST(WkvKernel, StepFormMatchesSequence) {
  torch::manual_seed(5);
  auto in = make_inputs(3, 17, 9, torch::kDouble);
  torch::NoGradGuard guard;
  auto y = wkv(in.w, in.u, in.k, in.v);
  auto st = cerebra::ops::wkv_initial_state(3, 9, in.k.options());
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < 17; ++t) ys.push_back(cerebra::ops::wkv_step(in.w, in.u, in.k.select(1, t), in.v.select(1, t), st));
  expect_close_f64("step-by-step vs wkv", torch::stack(ys, 1), y);
}

TEST(WkvKernel, SameResultOnOneAndTwoThreads) {
  torch::manual_seed(6);
  // B = 1, C = 205: one channel range on one thread, four on two (and a scalar tail).
  auto in = make_inputs(1, 40, 205, torch::kFloat);
  auto gy = torch::randn({1, 40, 205});
  std::vector<Tensor> one, two;
  {
    ThreadScope ts(1);
    one = run(&wkv, in, gy);
  }
  {
    ThreadScope ts(2);
    two = run(&wkv, in, gy);
  }
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(diff(one[i], two[i]).max, 0.0) << kNames[i];
}

TEST(WkvKernel, ReportsFlops) {
  torch::manual_seed(7);
  auto in = make_inputs(2, 30, 16, torch::kFloat);
  {
    torch::NoGradGuard guard;
    cerebra::FlopCounter counter;
    wkv(in.w, in.u, in.k, in.v);
    EXPECT_DOUBLE_EQ(counter.by_op()["kernel:wkv"], cerebra::ops::wkv_flops(2, 30, 16));
  }
  {
    torch::NoGradGuard guard;
    cerebra::FlopCounter counter;
    wkv_ref(in.w, in.u, in.k, in.v);
    EXPECT_DOUBLE_EQ(counter.total(), cerebra::ops::wkv_flops(2, 30, 16));
  }
}

TEST(WkvKernel, RejectsBadShapes) {
  auto k = torch::randn({2, 5, 4});
  EXPECT_THROW(wkv(torch::randn({3}), torch::randn({4}), k, k), c10::Error);
  EXPECT_THROW(wkv(torch::randn({4}), torch::randn({4}), k, torch::randn({2, 5, 3})), c10::Error);
  EXPECT_THROW(wkv(torch::randn({4}), torch::randn({4}), torch::randn({5, 4}), torch::randn({5, 4})), c10::Error);
}

}  // namespace
