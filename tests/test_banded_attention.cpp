// Banded (sliding-window) attention kernel against its reference, in the style of test_attention_kernel.cpp: output
// and every gradient with one shared random upstream gradient; ragged lengths crossing block and tile boundaries;
// symmetric, asymmetric, causal and empty windows; dilation 1, 2 and 3; key padding, including a sequence with no
// key and one padded beyond its length; float64 exactly, float32 against the float64 reference with the
// flash-attention criterion. The reference is checked by finite differences and, with a window covering the
// sequence, against full attention. FLOPs reported to the counter grow as n·w.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "cerebra/core/flop_counter.h"
#include "cerebra/ops/attention.h"
#include "cerebra/ops/banded_attention.h"
#include "kernel_test_util.h"

namespace {

using cerebra::ops::attention_ref;
using cerebra::ops::banded_attention;
using cerebra::ops::banded_attention_ref;
using cerebra::ops::BandedTiling;
using namespace cerebra::testing;
using torch::Tensor;

struct BandCase {
  int64_t n, dh, left, right, dilation;
  bool masked;
  BandedTiling tiling;
};

std::string case_name(const BandCase& c) {
  std::ostringstream s;
  s << "n" << c.n << "_dh" << c.dh << "_w" << c.left << "_" << c.right << "_dil" << c.dilation
    << (c.masked ? "_masked" : "") << "_tile" << c.tiling.q_rows << "x" << c.tiling.k_cols;
  return s.str();
}

// (B, n) padding mask with ragged real lengths: batch 0 is real but for a hole in the middle, batch 1 has no real
// key at all, later batches are real up to a length and padded beyond it.
Tensor ragged_mask(int64_t B, int64_t n) {
  auto mask = torch::zeros({B, n}, torch::kBool);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = b == 1 ? 0 : std::max<int64_t>(1, n - b * (n / 3 + 1));
    mask[b].narrow(0, 0, len).fill_(true);
  }
  if (n > 2) mask[0][n / 2] = false;
  return mask;
}

// {out, dq, dk, dv} of one attention call on leaf copies of q, k, v in `dtype`, for the upstream gradient dout.
template <typename F>
std::vector<Tensor> run(F&& attend, const Tensor& q64, const Tensor& k64, const Tensor& v64, const Tensor& dout64,
                        torch::ScalarType dtype) {
  auto q = q64.to(dtype).requires_grad_(), k = k64.to(dtype).requires_grad_(), v = v64.to(dtype).requires_grad_();
  auto out = attend(q, k, v);
  auto g = torch::autograd::grad({out}, {q, k, v}, {dout64.to(dtype)});
  return {out.detach(), g[0], g[1], g[2]};
}

const char* kNames[] = {"out", "dq", "dk", "dv"};

class BandedAttentionTest : public ::testing::TestWithParam<BandCase> {};

TEST_P(BandedAttentionTest, MatchesReferenceOnOutputAndGradients) {
  const BandCase c = GetParam();
  torch::manual_seed(0);
  const int64_t B = 3, H = 2;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dh));
  const auto o64 = torch::TensorOptions().dtype(torch::kDouble);
  const Tensor q64 = torch::randn({B, H, c.n, c.dh}, o64), k64 = torch::randn({B, H, c.n, c.dh}, o64),
               v64 = torch::randn({B, H, c.n, c.dh}, o64), dout64 = torch::randn({B, H, c.n, c.dh}, o64);
  const Tensor mask = c.masked ? ragged_mask(B, c.n) : Tensor();
  auto kernel = [&](const Tensor& q, const Tensor& k, const Tensor& v) {
    return banded_attention(q, k, v, mask, c.left, c.right, c.dilation, scale, c.tiling);
  };
  auto reference = [&](const Tensor& q, const Tensor& k, const Tensor& v) {
    return banded_attention_ref(q, k, v, mask, c.left, c.right, c.dilation, scale);
  };

  std::printf("[%s] float64\n", case_name(c).c_str());
  const auto ker64 = run(kernel, q64, k64, v64, dout64, torch::kDouble);
  const auto ref64 = run(reference, q64, k64, v64, dout64, torch::kDouble);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FALSE(ker64[i].isnan().any().item<bool>()) << kNames[i] << " has NaN";
    expect_close_f64(kNames[i], ker64[i], ref64[i]);
  }
  std::printf("[%s] float32\n", case_name(c).c_str());
  const auto ker32 = run(kernel, q64, k64, v64, dout64, torch::kFloat);
  const auto ref32 = run(reference, q64, k64, v64, dout64, torch::kFloat);
  for (int i = 0; i < 4; ++i) {
    EXPECT_FALSE(ker32[i].isnan().any().item<bool>()) << kNames[i] << " has NaN";
    if (max_abs(ref64[i]) == 0 && max_abs(ref32[i]) == 0) {
      // Zero in exact arithmetic (window 0: each softmax row is the constant 1, so dq = dk = 0): the float32
      // reference is exactly zero by its formula, the kernel's dS = P (dP - D) cancels two float32 dot products
      // computed apart. Held to float32 rounding at the scale of the other gradients: 16 ulps of max |dv|.
      const double bound = 16 * 1.1920929e-7 * max_abs(ref64[3]);
      print_diff(std::string(kNames[i]) + " kernel-truth (zero)", diff(ker32[i], ref64[i]));
      EXPECT_LE(max_abs(ker32[i]), bound) << kNames[i] << ": float32 kernel differs from an exact zero";
      continue;
    }
    expect_close_f32(kNames[i], ker32[i], ref32[i], ref64[i], i == 0 ? 2.0 : 3.0);
  }
}

const BandedTiling kSmall{16, 24};  // many block and tile boundaries at test sizes; tiles not aligned to blocks
const BandedTiling kOdd{7, 5};
const BandedTiling kDefault{};
const BandedTiling kLarge{64, 128};

INSTANTIATE_TEST_SUITE_P(
    Ragged, BandedAttentionTest,
    ::testing::Values(BandCase{1, 8, 0, 0, 1, false, kSmall}, BandCase{1, 8, 3, 2, 2, true, kSmall},
                      BandCase{7, 8, 0, 0, 1, true, kSmall},      // diagonal only: padded positions see no key
                      BandCase{7, 5, 2, 0, 1, false, kSmall},     // causal
                      BandCase{7, 5, 1, 3, 2, true, kOdd},        // asymmetric, dilated
                      BandCase{113, 16, 0, 0, 1, false, kSmall},  // diagonal only
                      BandCase{113, 16, 5, 9, 1, true, kSmall},   // asymmetric
                      BandCase{113, 16, 20, 0, 1, true, kSmall},  // causal
                      BandCase{113, 16, 0, 11, 2, true, kSmall},  // anti-causal, dilated
                      BandCase{113, 16, 7, 7, 2, false, kOdd},    // symmetric, dilated
                      BandCase{203, 33, 40, 25, 1, true, kSmall}, BandCase{203, 33, 64, 0, 2, true, kSmall},
                      BandCase{203, 64, 64, 64, 1, true, kDefault}, BandCase{203, 64, 50, 70, 1, true, kLarge},
                      BandCase{203, 16, 17, 31, 3, true, kSmall},
                      BandCase{203, 16, 300, 300, 1, true, kSmall}),  // window beyond the sequence
    [](const ::testing::TestParamInfo<BandCase>& info) { return case_name(info.param); });

// A window reaching every key is full attention; window_right = 0 with window_left >= n is causal attention.
TEST(BandedAttention, FullWindowIsFullAttention) {
  torch::manual_seed(4);
  const int64_t B = 3, H = 2, n = 57, dh = 8;
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  const Tensor q = torch::randn({B, H, n, dh}, o), k = torch::randn({B, H, n, dh}, o),
               v = torch::randn({B, H, n, dh}, o), dout = torch::randn({B, H, n, dh}, o);
  for (bool masked : {false, true}) {
    const Tensor mask = masked ? ragged_mask(B, n) : Tensor();
    for (bool causal : {false, true}) {
      const int64_t left = causal ? int64_t{1} << 40 : n, right = causal ? 0 : n - 1;
      const auto full = run([&](auto& q_, auto& k_, auto& v_) { return attention_ref(q_, k_, v_, mask, causal, 0.4); },
                            q, k, v, dout, torch::kDouble);
      const auto ker = run(
          [&](auto& q_, auto& k_, auto& v_) {
            return banded_attention(q_, k_, v_, mask, left, right, 1, 0.4, {16, 24});
          },
          q, k, v, dout, torch::kDouble);
      const auto ref =
          run([&](auto& q_, auto& k_, auto& v_) { return banded_attention_ref(q_, k_, v_, mask, left, right, 1, 0.4); },
              q, k, v, dout, torch::kDouble);
      std::printf("[full window masked=%d causal=%d]\n", masked, causal);
      for (int i = 0; i < 4; ++i) {
        expect_close_f64(std::string(kNames[i]) + " kernel-full", ker[i], full[i]);
        expect_close_f64(std::string(kNames[i]) + " ref-full", ref[i], full[i]);
      }
    }
  }
}

// Rows with no key to attend: zeros and zero gradients, never NaN, in kernel and reference alike.
TEST(BandedAttention, RowsWithoutKeysGiveZerosNotNaN) {
  torch::manual_seed(1);
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  auto q = torch::randn({2, 2, 9, 4}, o).requires_grad_(), k = torch::randn({2, 2, 9, 4}, o).requires_grad_(),
       v = torch::randn({2, 2, 9, 4}, o).requires_grad_();
  auto mask = torch::ones({2, 9}, torch::kBool);
  mask[1].fill_(false);                  // batch 1: every key padded
  mask[0].narrow(0, 0, 4).fill_(false);  // batch 0, window 1 each side: query rows 0..2 see no key
  for (bool kernel : {true, false}) {
    auto out = kernel ? banded_attention(q, k, v, mask, 1, 1, 1, 0.5, {4, 4})
                      : banded_attention_ref(q, k, v, mask, 1, 1, 1, 0.5);
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
TEST(BandedAttention, ReferenceMatchesFiniteDifferences) {
  torch::manual_seed(2);
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  struct W {
    int64_t left, right, dilation;
    bool masked;
  };
  for (const W w : {W{1, 1, 1, false}, W{2, 0, 1, true}, W{1, 2, 2, true}}) {
    auto q = torch::randn({2, 1, 6, 3}, o).requires_grad_(), k = torch::randn({2, 1, 6, 3}, o).requires_grad_(),
         v = torch::randn({2, 1, 6, 3}, o).requires_grad_();
    auto proj = torch::randn({2, 1, 6, 3}, o);  // random projection of the output to a scalar
    Tensor mask;
    if (w.masked) {
      mask = torch::ones({2, 6}, torch::kBool);
      mask[0][2] = false;
      mask[1].narrow(0, 3, 3).fill_(false);
    }
    auto f = [&] { return (banded_attention_ref(q, k, v, mask, w.left, w.right, w.dilation, 0.7) * proj).sum(); };
    std::printf("[reference window %lld/%lld dilation %lld masked=%d]\n", static_cast<long long>(w.left),
                static_cast<long long>(w.right), static_cast<long long>(w.dilation), w.masked);
    expect_gradcheck("banded_attention_ref", f, {q, k, v}, {"q", "k", "v"});
  }
}

// With fewer lanes (batch·head·residue classes) than threads, the backward splits the query blocks into groups with
// private dk, dv accumulators; the result is the same.
TEST(BandedAttention, SameResultWithBlockGroups) {
  torch::manual_seed(3);
  const auto o = torch::TensorOptions().dtype(torch::kDouble);
  const Tensor q = torch::randn({1, 1, 150, 16}, o), k = torch::randn({1, 1, 150, 16}, o),
               v = torch::randn({1, 1, 150, 16}, o), dout = torch::randn({1, 1, 150, 16}, o);
  for (int64_t dilation : {1, 2}) {
    std::vector<Tensor> results[2];
    for (int threads : {1, 3}) {
      ThreadScope scope(threads);
      results[threads == 3] = run(
          [&](auto& q_, auto& k_, auto& v_) {
            return banded_attention(q_, k_, v_, {}, 20, 5, dilation, 0.25, {16, 16});
          },
          q, k, v, dout, torch::kDouble);
    }
    for (int i = 0; i < 4; ++i)
      expect_close_f64(std::string(kNames[i]) + " 1 vs 3 threads", results[1][i], results[0][i]);
  }
}

// FLOPs reported to the counter: the block products that ran (2 per multiply-add). At a fixed window they grow as n
// (doubling n doubles them), they stay within a small factor of the band's own 4·n·w·dh, and the backward's five
// products are 2.5 times the forward's two.
TEST(BandedAttention, ReportsFlopsLinearInLength) {
  const int64_t B = 1, H = 2, dh = 8, left = 32, right = 32;
  auto flops = [&](int64_t n) {
    auto q = torch::randn({B, H, n, dh}).requires_grad_(), k = torch::randn({B, H, n, dh}).requires_grad_(),
         v = torch::randn({B, H, n, dh}).requires_grad_();
    cerebra::FlopCounter counter;
    auto out = banded_attention(q, k, v, {}, left, right, 1, 0.3);
    const double fwd = counter.by_op()["kernel:banded_attention"];
    out.backward(torch::ones_like(out));
    const double total = counter.by_op()["kernel:banded_attention"];
    EXPECT_DOUBLE_EQ(total, fwd * 3.5);
    double band = 0;  // (query, key) pairs in the band
    for (int64_t i = 0; i < n; ++i) band += std::min(n - 1, i + right) - std::max<int64_t>(0, i - left) + 1;
    const double useful = 4.0 * B * H * band * dh;
    std::printf("  n %lld: forward %.0f FLOPs, %.2f x the band's\n", static_cast<long long>(n), fwd, fwd / useful);
    EXPECT_GE(fwd, useful);
    EXPECT_LE(fwd, 2.5 * useful);
    return fwd;
  };
  const double f1 = flops(1024), f2 = flops(2048), f3 = flops(4096);
  EXPECT_NEAR(f2 / f1, 2.0, 0.1);
  EXPECT_NEAR(f3 / f2, 2.0, 0.1);
}

TEST(BandedAttention, RejectsBadArguments) {
  auto q = torch::randn({1, 2, 6, 4});
  EXPECT_THROW(banded_attention(q, torch::randn({1, 2, 7, 4}), q, {}, 1, 1, 1, 1.0), c10::Error);
  EXPECT_THROW(banded_attention(q, q, torch::randn({1, 2, 6, 3}), {}, 1, 1, 1, 1.0), c10::Error);
  EXPECT_THROW(banded_attention(q, q, q, torch::ones({1, 5}, torch::kBool), 1, 1, 1, 1.0), c10::Error);
  EXPECT_THROW(banded_attention(q, q, q, torch::ones({1, 6}), 1, 1, 1, 1.0), c10::Error);
  EXPECT_THROW(banded_attention(q, q, q, {}, -1, 1, 1, 1.0), c10::Error);
  EXPECT_THROW(banded_attention(q, q, q, {}, 1, 1, 0, 1.0), c10::Error);
  EXPECT_THROW(banded_attention_ref(q.view({2, 6, 4}), q, q, {}, 1, 1, 1, 1.0), c10::Error);
  try {
    banded_attention(q, torch::randn({1, 2, 7, 4}), q, {}, 1, 1, 1, 1.0);
    ADD_FAILURE() << "no error for a k of another length";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("k must be (B, H, n, dh)"), std::string::npos);
  }
}

}  // namespace
