// Mamba-2's chunked SSD (ops/ssd.h) against the sequential recurrence: outputs, final state and the gradients of
// x, dt, A, B, C in float64 (T not a multiple of the chunk, T = 1, one chunk, chunks of one step, several groups),
// strong decays in float32, the one-step form, chunk-size invariance and the FLOPs the counter measures.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cerebra/core/flop_counter.h"
#include "cerebra/ops/ssd.h"
#include "kernel_test_util.h"

namespace {

using namespace cerebra::testing;
using cerebra::ops::ssd;
using cerebra::ops::ssd_ref;
using torch::Tensor;

struct Shape {
  int64_t B, T, H, P, G, N, chunk;
  std::string str() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" + std::to_string(H) + " P=" +
           std::to_string(P) + " G=" + std::to_string(G) + " N=" + std::to_string(N) + " chunk=" +
           std::to_string(chunk);
  }
};

struct Inputs {
  Tensor x, dt, A, Bm, Cm;
  std::vector<Tensor> all() const { return {x, dt, A, Bm, Cm}; }
};

// Leaves: dt = softplus(N(0, 1) + dt_shift) > 0, A = -exp(U[0, a_log_max]) < 0.
Inputs make_inputs(const Shape& s, torch::Dtype dtype, double dt_shift = -1.0, double a_log_max = 1.0) {
  auto o = torch::TensorOptions().dtype(torch::kDouble);
  Inputs in{torch::randn({s.B, s.T, s.H, s.P}, o), torch::softplus(torch::randn({s.B, s.T, s.H}, o) + dt_shift),
            -torch::exp(torch::rand({s.H}, o) * a_log_max), torch::randn({s.B, s.T, s.G, s.N}, o),
            torch::randn({s.B, s.T, s.G, s.N}, o)};
  for (Tensor* t : {&in.x, &in.dt, &in.A, &in.Bm, &in.Cm}) *t = t->to(dtype).requires_grad_();
  return in;
}

Inputs cast(const Inputs& in, torch::Dtype dt) {
  return {in.x.detach().to(dt).requires_grad_(), in.dt.detach().to(dt).requires_grad_(),
          in.A.detach().to(dt).requires_grad_(), in.Bm.detach().to(dt).requires_grad_(),
          in.Cm.detach().to(dt).requires_grad_()};
}

// y, final state, and the gradients of Σ y ∘ gy + Σ state ∘ gs with respect to (x, dt, A, B, C).
std::vector<Tensor> run(const std::function<std::tuple<Tensor, Tensor>(const Inputs&)>& op, const Inputs& in,
                        const Tensor& gy, const Tensor& gs) {
  auto [y, st] = op(in);
  auto loss = (y * gy.to(y.scalar_type())).sum() + (st * gs.to(st.scalar_type())).sum();
  auto g = torch::autograd::grad({loss}, in.all());
  g.insert(g.begin(), {y.detach(), st.detach()});
  return g;
}

const char* kNames[] = {"y", "state", "dx", "ddt", "dA", "dB", "dC"};

auto chunked(int64_t chunk) {
  return [chunk](const Inputs& in) { return ssd(in.x, in.dt, in.A, in.Bm, in.Cm, chunk); };
}
std::tuple<Tensor, Tensor> reference(const Inputs& in) { return ssd_ref(in.x, in.dt, in.A, in.Bm, in.Cm); }

TEST(SsdKernel, MatchesRecurrenceFloat64) {
  torch::manual_seed(0);
  for (const Shape& s : std::vector<Shape>{{2, 37, 4, 3, 2, 5, 8},    // T not a multiple of the chunk, 2 groups
                                           {1, 1, 2, 4, 1, 3, 64},    // T = 1
                                           {2, 64, 2, 4, 1, 8, 16},   // T a multiple of the chunk
                                           {1, 50, 3, 2, 3, 4, 64},   // one chunk (Q = T), a group per head
                                           {2, 20, 2, 2, 1, 3, 1}}) { // chunks of one step
    SCOPED_TRACE(s.str());
    auto in = make_inputs(s, torch::kDouble);
    auto gy = torch::randn({s.B, s.T, s.H, s.P}, torch::kDouble);
    auto gs = torch::randn({s.B, s.H, s.P, s.N}, torch::kDouble);
    auto got = run(chunked(s.chunk), in, gy, gs), want = run(&reference, in, gy, gs);
    for (size_t i = 0; i < got.size(); ++i) expect_close_f64(kNames[i], got[i], want[i]);
  }
}

TEST(SsdKernel, StrongDecayFloat32) {
  torch::manual_seed(1);
  // dt·A down to about -100 per step: e^{Σ a} over a chunk underflows; every exponential the chunked form takes is
  // of a non-positive number, so outputs and gradients stay finite, and as accurate as the float32 recurrence.
  const Shape s{2, 150, 4, 8, 1, 16, 64};
  auto truth_in = make_inputs(s, torch::kDouble, 1.0, 3.0);
  auto gy = torch::randn({s.B, s.T, s.H, s.P}, torch::kDouble);
  auto gs = torch::randn({s.B, s.H, s.P, s.N}, torch::kDouble);
  auto truth = run(&reference, truth_in, gy, gs);
  auto in32 = cast(truth_in, torch::kFloat);
  auto got = run(chunked(s.chunk), in32, gy, gs), ref32 = run(&reference, in32, gy, gs);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(torch::isfinite(got[i]).all().item<bool>()) << kNames[i] << " has inf or NaN";
    expect_close_f32(kNames[i], got[i], ref32[i], truth[i], i < 2 ? 2.0 : 3.0);
  }
}

TEST(SsdKernel, StepFormMatchesChunked) {
  torch::manual_seed(2);
  const Shape s{2, 21, 4, 3, 2, 5, 8};
  auto in = make_inputs(s, torch::kDouble);
  torch::NoGradGuard guard;
  auto [y, last] = ssd(in.x, in.dt, in.A, in.Bm, in.Cm, s.chunk);
  auto state = torch::zeros({s.B, s.H, s.P, s.N}, torch::kDouble);
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < s.T; ++t)
    ys.push_back(cerebra::ops::ssd_step(in.x.select(1, t), in.dt.select(1, t), in.A, in.Bm.select(1, t),
                                        in.Cm.select(1, t), state));
  expect_close_f64("step-by-step y", torch::stack(ys, 1), y);
  expect_close_f64("step-by-step state", state, last);
}

TEST(SsdKernel, ChunkSizeDoesNotChangeTheResult) {
  torch::manual_seed(3);
  const Shape s{2, 45, 2, 8, 1, 8, 64};
  auto in = make_inputs(s, torch::kFloat);
  torch::NoGradGuard guard;
  auto [y, st] = ssd(in.x, in.dt, in.A, in.Bm, in.Cm, 64);
  for (int64_t chunk : {1, 4, 16, 45, 100}) {
    auto [y2, st2] = ssd(in.x, in.dt, in.A, in.Bm, in.Cm, chunk);
    EXPECT_LE(diff(y, y2).max, 1e-5 * std::max(1.0, max_abs(y))) << "chunk " << chunk;
    EXPECT_LE(diff(st, st2).max, 1e-5 * std::max(1.0, max_abs(st))) << "chunk " << chunk;
  }
}

TEST(SsdKernel, AnalyticFlopsMatchCounter) {
  torch::manual_seed(4);
  for (const Shape& s : std::vector<Shape>{{2, 100, 4, 8, 2, 16, 32}, {1, 37, 2, 16, 1, 8, 64}}) {
    SCOPED_TRACE(s.str());
    auto in = make_inputs(s, torch::kFloat);
    torch::NoGradGuard guard;
    cerebra::FlopCounter counter;
    ssd(in.x, in.dt, in.A, in.Bm, in.Cm, s.chunk);
    for (const auto& kv : counter.by_op()) std::printf("    %-28s %.0f\n", kv.first.c_str(), kv.second);
    EXPECT_DOUBLE_EQ(counter.total(), cerebra::ops::ssd_flops(s.B, s.T, s.H, s.P, s.G, s.N, s.chunk));
  }
}

TEST(SsdKernel, RejectsBadShapes) {
  auto x = torch::randn({1, 5, 4, 2}), dt = torch::rand({1, 5, 4}), A = -torch::rand({4});
  auto Bm = torch::randn({1, 5, 3, 2});  // 3 groups do not divide 4 heads
  EXPECT_THROW(ssd(x, dt, A, Bm, Bm), c10::Error);
  EXPECT_THROW(ssd(x, dt, -torch::rand({3}), torch::randn({1, 5, 1, 2}), torch::randn({1, 5, 1, 2})), c10::Error);
  EXPECT_THROW(ssd(x, dt, A, torch::randn({1, 5, 1, 2}), torch::randn({1, 5, 1, 2}), 0), c10::Error);
}

}  // namespace
