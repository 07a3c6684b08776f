// Tiled attention kernel against its reference (in the style of flash-attention's test_flash_attn.py): output and
// every gradient with one shared random upstream gradient; ragged lengths crossing tile boundaries; causal or not;
// key padding, including rows with no key; float64 exactly, float32 against the float64 reference with the
// flash-attention criterion. The reference itself is checked by finite differences.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "cerebra/core/flop_counter.h"
#include "cerebra/ops/attention.h"
#include "kernel_test_util.h"

namespace {

using cerebra::ops::attention_packed_ref;
using cerebra::ops::attention_ref;
using cerebra::ops::AttentionTiling;
using cerebra::ops::tiled_attention;
using cerebra::ops::tiled_attention_packed;
using namespace cerebra::testing;
using torch::Tensor;

struct AttnCase {
  int64_t nq, nk, dh;
  bool causal, masked;
  AttentionTiling tiling;
};

std::string case_name(const AttnCase& c) {
  std::ostringstream s;
  s << "nq" << c.nq << "_nk" << c.nk << "_dh" << c.dh << (c.causal ? "_causal" : "") << (c.masked ? "_masked" : "")
    << "_tile" << c.tiling.q_rows << "x" << c.tiling.k_cols;
  return s.str();
}

// (B, n_k) padding mask with ragged real lengths; batch 1 has no real key at all.
Tensor ragged_mask(int64_t B, int64_t nk) {
  auto mask = torch::zeros({B, nk}, torch::kBool);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = b == 1 ? 0 : std::max<int64_t>(1, nk - b * (nk / 3 + 1));
    mask[b].narrow(0, 0, len).fill_(true);
  }
  if (nk > 2) mask[0][nk / 2] = false;  // a hole inside a real stretch
  return mask;
}

class AttentionKernelTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionKernelTest, MatchesReferenceOnOutputAndGradients) {
  const AttnCase c = GetParam();
  torch::manual_seed(0);
  const int64_t B = 3, H = 2;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dh));
  const auto o64 = torch::TensorOptions().dtype(torch::kDouble);
  const Tensor q64 = torch::randn({B, H, c.nq, c.dh}, o64), k64 = torch::randn({B, H, c.nk, c.dh}, o64),
               v64 = torch::randn({B, H, c.nk, c.dh}, o64), dout64 = torch::randn({B, H, c.nq, c.dh}, o64);
  const Tensor mask = c.masked ? ragged_mask(B, c.nk) : Tensor();

  // Runs attention on leaf copies of q, k, v in `dtype`: {out, dq, dk, dv} for the shared upstream gradient.
  auto run = [&](bool kernel, torch::ScalarType dtype) {
    auto q = q64.to(dtype).requires_grad_(), k = k64.to(dtype).requires_grad_(), v = v64.to(dtype).requires_grad_();
    auto out = kernel ? tiled_attention(q, k, v, mask, c.causal, scale, c.tiling)
                      : attention_ref(q, k, v, mask, c.causal, scale);
    auto g = torch::autograd::grad({out}, {q, k, v}, {dout64.to(dtype)});
    return std::vector<Tensor>{out.detach(), g[0], g[1], g[2]};
  };
  const char* names[] = {"out", "dq", "dk", "dv"};

  std::printf("[%s] float64\n", case_name(c).c_str());
  const auto ker64 = run(true, torch::kDouble), ref64 = run(false, torch::kDouble);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FALSE(ker64[i].isnan().any().item<bool>()) << names[i] << " has NaN";
    expect_close_f64(names[i], ker64[i], ref64[i]);
  }
  std::printf("[%s] float32\n", case_name(c).c_str());
  const auto ker32 = run(true, torch::kFloat), ref32 = run(false, torch::kFloat);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FALSE(ker32[i].isnan().any().item<bool>()) << names[i] << " has NaN";
    expect_close_f32(names[i], ker32[i], ref32[i], ref64[i], i == 0 ? 2.0 : 3.0);
  }
}

const AttentionTiling kSmallTiles{16, 32};  // many tile boundaries at test sizes
const AttentionTiling kDefaultTiles{};

INSTANTIATE_TEST_SUITE_P(
    Ragged, AttentionKernelTest,
    ::testing::Values(AttnCase{1, 1, 8, false, false, kSmallTiles}, AttnCase{7, 7, 8, true, false, kSmallTiles},
                      AttnCase{7, 9, 5, false, true, kSmallTiles}, AttnCase{113, 113, 16, false, false, kSmallTiles},
                      AttnCase{113, 113, 16, true, false, kSmallTiles}, AttnCase{113, 113, 16, true, true, kSmallTiles},
                      AttnCase{113, 203, 33, false, true, kSmallTiles}, AttnCase{203, 113, 64, true, true, kSmallTiles},
                      AttnCase{1023, 1023, 32, false, true, kDefaultTiles},
                      AttnCase{1023, 1023, 32, true, false, kDefaultTiles}),
    [](const ::testing::TestParamInfo<AttnCase>& info) { return case_name(info.param); });

// Rows with no key to attend: zeros and zero gradients, never NaN, in kernel and reference alike.
TEST(AttentionKernel, RowsWithoutKeysGiveZerosNotNaN) {
  torch::manual_seed(1);
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  auto q = torch::randn({2, 2, 9, 4}, o).requires_grad_(), k = torch::randn({2, 2, 9, 4}, o).requires_grad_(),
       v = torch::randn({2, 2, 9, 4}, o).requires_grad_();
  auto mask = torch::ones({2, 9}, torch::kBool);
  mask[1].fill_(false);                  // batch 1: every key padded
  mask[0].narrow(0, 0, 3).fill_(false);  // batch 0, causal: query rows 0..2 see no key
  for (bool kernel : {true, false}) {
    auto out = kernel ? tiled_attention(q, k, v, mask, true, 0.5, {4, 4}) : attention_ref(q, k, v, mask, true, 0.5);
    auto g = torch::autograd::grad({out.sum()}, {q, k, v});
    EXPECT_FALSE(out.isnan().any().item<bool>());
    EXPECT_EQ(max_abs(out[1]), 0.0);
    EXPECT_EQ(max_abs(out[0].narrow(1, 0, 3)), 0.0);
    EXPECT_GT(max_abs(out[0].narrow(1, 3, 6)), 0.0);
    for (const auto& gi : g) EXPECT_FALSE(gi.isnan().any().item<bool>());
    EXPECT_EQ(max_abs(g[0][1]), 0.0);                  // dq of the batch with no key
    EXPECT_EQ(max_abs(g[0][0].narrow(1, 0, 3)), 0.0);  // dq of the rows with no key
    EXPECT_EQ(max_abs(g[1][1]), 0.0);
    EXPECT_EQ(max_abs(g[2][1]), 0.0);
  }
}

// The reference's gradients by central differences (float64, tiny shapes).
TEST(AttentionKernel, ReferenceMatchesFiniteDifferences) {
  torch::manual_seed(2);
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  for (bool causal : {false, true}) {
    for (bool masked : {false, true}) {
      auto q = torch::randn({2, 2, 5, 3}, o).requires_grad_(), k = torch::randn({2, 2, 6, 3}, o).requires_grad_(),
           v = torch::randn({2, 2, 6, 3}, o).requires_grad_();
      auto w = torch::randn({2, 2, 5, 3}, o);  // random projection of the output to a scalar
      Tensor mask;
      if (masked) {
        mask = torch::ones({2, 6}, torch::kBool);
        mask[0][4] = false;
        mask[1].fill_(false);
      }
      auto f = [&] { return (attention_ref(q, k, v, mask, causal, 0.7) * w).sum(); };
      std::printf("[reference causal=%d masked=%d]\n", causal, masked);
      expect_gradcheck("attention_ref", f, {q, k, v}, {"q", "k", "v"});
    }
  }
}

// With fewer batch·heads than threads, the backward splits key tiles into groups with private dq accumulators.
TEST(AttentionKernel, SameResultWithKeyTileGroups) {
  torch::manual_seed(3);
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  auto q = torch::randn({1, 1, 150, 16}, o).requires_grad_(), k = torch::randn({1, 1, 150, 16}, o).requires_grad_(),
       v = torch::randn({1, 1, 150, 16}, o).requires_grad_();
  auto dout = torch::randn({1, 1, 150, 16}, o);
  std::vector<Tensor> results[2];
  for (int threads : {1, 2}) {
    ThreadScope scope(threads);
    auto out = tiled_attention(q, k, v, {}, true, 0.25, {32, 32});
    auto g = torch::autograd::grad({out}, {q, k, v}, {dout});
    results[threads - 1] = {out.detach(), g[0], g[1], g[2]};
  }
  const char* names[] = {"out", "dq", "dk", "dv"};
  for (int i = 0; i < 4; ++i) expect_close_f64(std::string(names[i]) + " 1 vs 2 threads", results[1][i], results[0][i]);
}

// FLOPs reported to the counter: the tile products that ran (2 per multiply-add).
TEST(AttentionKernel, ReportsTileFlops) {
  const int64_t B = 2, H = 3, n = 100, dh = 8;
  auto q = torch::randn({B, H, n, dh}).requires_grad_(), k = torch::randn({B, H, n, dh}).requires_grad_(),
       v = torch::randn({B, H, n, dh}).requires_grad_();
  cerebra::FlopCounter counter;
  auto out = tiled_attention(q, k, v, {}, false, 0.3, {32, 64});
  const double fwd = 4.0 * B * H * n * n * dh;
  EXPECT_DOUBLE_EQ(counter.by_op()["kernel:tiled_attention"], fwd);
  out.backward(torch::ones_like(out));
  EXPECT_DOUBLE_EQ(counter.by_op()["kernel:tiled_attention"], fwd * 3.5);  // backward: 5 products to the forward's 2
}

TEST(AttentionKernel, RejectsBadShapes) {
  auto q = torch::randn({1, 2, 5, 4}), k = torch::randn({1, 2, 6, 4});
  EXPECT_THROW(tiled_attention(q, torch::randn({1, 2, 6, 3}), k, {}, false, 1.0), c10::Error);
  EXPECT_THROW(tiled_attention(q, k, torch::randn({1, 2, 5, 4}), {}, false, 1.0), c10::Error);
  EXPECT_THROW(tiled_attention(q, k, k, torch::ones({1, 5}, torch::kBool), false, 1.0), c10::Error);
  EXPECT_THROW(tiled_attention(q, k, k, torch::ones({1, 6}), false, 1.0), c10::Error);
  EXPECT_THROW(attention_ref(q.view({2, 5, 4}), k, k, {}, false, 1.0), c10::Error);
  try {
    tiled_attention(q, torch::randn({1, 2, 6, 3}), k, {}, false, 1.0);
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("k must be (B, H, n_k, dh)"), std::string::npos);
  }
}

// ---- packed variable-length layout ------------------------------------------------------------------------------

// Offsets (S + 1) of sequences with the given lengths laid end to end.
Tensor offsets_of(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> cu{0};
  for (const int64_t n : lengths) cu.push_back(cu.back() + n);
  return torch::tensor(cu, torch::kLong);
}

// Sequences of different lengths (empty ones, a query-only one, lengths crossing the small tiles): the packed kernel
// against one reference call per sequence, output and every gradient, float64, causal or not, 1 and 2 threads.
TEST(AttentionKernelPacked, MatchesPerSequenceReferenceOnOutputAndGradients) {
  torch::manual_seed(4);
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  const std::vector<int64_t> lq = {5, 0, 37, 1, 16, 23}, lk_cross = {9, 0, 37, 0, 40, 23};
  for (bool causal : {false, true}) {
    // causal: queries and keys of a sequence are the same tokens; otherwise keys differ in number (a sequence
    // with queries and no keys gives zero rows)
    const auto& lk = causal ? lq : lk_cross;
    const Tensor cu_q = offsets_of(lq), cu_k = offsets_of(lk);
    const int64_t H = 2, dh = 6, Tq = cu_q[-1].item<int64_t>(), Tk = cu_k[-1].item<int64_t>();
    const Tensor q0 = torch::randn({H, Tq, dh}, o), k0 = torch::randn({H, Tk, dh}, o), v0 = torch::randn({H, Tk, dh}, o),
                 dout = torch::randn({H, Tq, dh}, o);
    auto run = [&](bool kernel, int threads) {
      ThreadScope scope(threads);
      auto q = q0.clone().requires_grad_(), k = k0.clone().requires_grad_(), v = v0.clone().requires_grad_();
      auto out = kernel ? tiled_attention_packed(q, k, v, cu_q, cu_k, causal, 0.4, {8, 16})
                        : attention_packed_ref(q, k, v, cu_q, cu_k, causal, 0.4);
      auto g = torch::autograd::grad({out}, {q, k, v}, {dout});
      return std::vector<Tensor>{out.detach(), g[0], g[1], g[2]};
    };
    const auto ref = run(false, 1);
    const char* names[] = {"out", "dq", "dk", "dv"};
    for (int threads : {1, 2}) {
      std::printf("[packed causal=%d threads=%d]\n", causal, threads);
      const auto ker = run(true, threads);
      for (int i = 0; i < 4; ++i) expect_close_f64(names[i], ker[i], ref[i]);
    }
    if (!causal) EXPECT_EQ(max_abs(ref[0].narrow(1, 42, 1)), 0.0);  // the query-only sequence: zeros
  }
}

// The packed layout gives the padded kernel's result on the real rows of a padded batch (up to float summation
// order: the padded kernel's tiles include masked columns).
TEST(AttentionKernelPacked, EqualsThePaddedKernelOnRealRows) {
  torch::manual_seed(5);
  const int64_t B = 3, H = 2, n = 20, dh = 8;
  const std::vector<int64_t> lengths = {20, 7, 13};
  auto q = torch::randn({B, H, n, dh}), k = torch::randn({B, H, n, dh}), v = torch::randn({B, H, n, dh});
  auto mask = torch::zeros({B, n}, torch::kBool);
  for (int64_t b = 0; b < B; ++b) mask[b].narrow(0, 0, lengths[b]).fill_(true);
  const auto padded = tiled_attention(q, k, v, mask, false, 0.35, {8, 8});
  auto pack = [&](const Tensor& t) {
    std::vector<Tensor> rows;
    for (int64_t b = 0; b < B; ++b) rows.push_back(t[b].narrow(1, 0, lengths[b]));
    return torch::cat(rows, 1);  // (H, T, dh)
  };
  const Tensor cu = offsets_of(lengths);
  const auto packed = tiled_attention_packed(pack(q), pack(k), pack(v), cu, cu, false, 0.35, {8, 8});
  EXPECT_TRUE(torch::allclose(packed, pack(padded), 1e-5, 1e-6)) << diff(packed, pack(padded)).max;
}

TEST(AttentionKernelPacked, CountsOnlyTheRowsAndKeysOfEachSequence) {
  const std::vector<int64_t> lq = {3, 0, 10}, lk = {5, 4, 10};
  const int64_t H = 2, dh = 4;
  auto q = torch::randn({H, 13, dh}), k = torch::randn({H, 19, dh});
  cerebra::FlopCounter counter;
  tiled_attention_packed(q, k, k, offsets_of(lq), offsets_of(lk), false, 1.0, {4, 4});
  EXPECT_DOUBLE_EQ(counter.by_op()["kernel:tiled_attention"], 4.0 * H * dh * (3 * 5 + 10 * 10));
}

TEST(AttentionKernelPacked, RejectsBadOffsets) {
  auto q = torch::randn({2, 6, 4}), k = torch::randn({2, 5, 4});
  auto message = [&](const Tensor& cu_q, const Tensor& cu_k) {
    try {
      tiled_attention_packed(q, k, k, cu_q, cu_k, false, 1.0);
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string();
  };
  EXPECT_NE(message(offsets_of({2, 3}), offsets_of({2, 3})).find("cu_q must run from 0 to 6"), std::string::npos);
  EXPECT_NE(message(torch::tensor({0, 4, 2, 6}, torch::kLong), offsets_of({1, 2, 2})).find("must not decrease"),
            std::string::npos);
  EXPECT_NE(message(offsets_of({6}), offsets_of({2, 3})).find("same sequences"), std::string::npos);
  EXPECT_NE(message(offsets_of({6}).to(torch::kInt), offsets_of({5})).find("int64"), std::string::npos);
  EXPECT_EQ(message(offsets_of({6}), offsets_of({5})), "");  // well-formed: no error
  EXPECT_THROW(tiled_attention_packed(q.unsqueeze(0), k, k, offsets_of({6}), offsets_of({5}), false, 1.0), c10::Error);
}

}  // namespace
