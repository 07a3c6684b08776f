// Longformer self-attention (Beltagy et al. 2020) as a SequenceMixer ("longformer"): a sliding window run by the
// banded kernel (cerebra::ops::banded_attention) plus global tokens, multi-head, one set of q/k/v projections.
//
// Own options (LongformerOptions, config keys of the same names):
//   window         w: non-causal, query i attends the keys i + t·dilation for t in [-w/2, w/2]; causal, t in [-w, 0]
//                  (w + 1 keys either way for even w). The key `window` is shared with the cerebra mixer, so its
//                  default (8) is the schema's one default for that key.
//   dilation       step between the window's keys (1 = contiguous)
//   global_tokens  g: the first g positions are global. Non-causal: a global query attends every key and every
//                  query attends every global key. Causal: every query i attends the global keys j <= i (the prefix)
//                  and no query attends beyond itself.
//
// Exactness. A non-global query's softmax runs jointly over its window keys and the global keys (a global key in
// the window counts once). The kernel only returns the normalised window output, so the global keys' share is put
// into the kernel's own softmax: the sequence is laid out twice as long, each real position followed (d positions
// later, d = dilation, so residue classes are kept) by a "sink" position; the doubled window (2·wl, 2·wr + 1) covers
// the real keys of the original window at the even steps and m_i sinks at the odd steps. Every sink has key
// [0, 1] and value [0, 0]; query i carries one extra coordinate (lse_G(i) - log m_i)/scale, where lse_G(i) is the
// log-sum-exp of its scores over its global keys (dense, n x g), so the m_i sinks together hold exactly the global
// keys' softmax mass. Real keys carry value [v, 1], so the kernel's extra output column is the window's share α of
// the joint softmax: y = out[:dh] + (1 - α)·attention(q, global keys). Global keys are removed from the window
// through the kernel's key mask (no double count). Everything is differentiable through the kernel's backward and
// torch ops: outputs and gradients equal dense masked softmax attention (tests/test_efficient_attention.cpp).
// Cost: with g > 0 the kernel runs on 2n rows with a window twice as wide and head width dh + 1, about 4x the
// plain window (g = 0 calls the kernel directly on the original sequence).
//
// flops(n) (forward, per sequence): 8·n·d² for the projections; the kernel's products exactly as it runs them on an
// unpadded sequence (its block and tile loop is replayed, band corners included, 4·(rows·cols)·width per tile);
// with g > 0 the dense global parts: 4·n·g·d (scores and values over the global keys) and, non-causal, 4·g·n·d
// (the global rows). Padded or masked tiles the kernel skips at run time are counted as flops(n) does not know them.
//
// Causal generation (step): the state holds the keys and values of the global tokens seen, "k_global"/"v_global"
// (B, h, min(g, t), dh), and of the last min(t, w·dilation) tokens, "k_window"/"v_window" (B, h, ., dh), for
// t = state.position tokens seen: a fixed size, 2·B·h·dh·(g + w·dilation) floats, once t >= max(g, w·dilation).
// A chunk of m new tokens runs the same joint softmax densely: query i over its window keys i - t'·dilation,
// t' in [0, w], that are not global, and over the global keys j <= i ((B, h, m, g + w·dilation + m) scores).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"
#include "cerebra/ops/banded_attention.h"

namespace cerebra {

namespace {

using torch::Tensor;

struct LongformerOptions {
  int64_t window = 8, dilation = 1, global_tokens = 1;
};

// Σ rows·cols of the score tiles banded_attention's forward multiplies for one lane of `len` rows (window wl, wr
// after its clamping, dilation-1 band within the lane), with the tiling's block shape. `masked(c)` says whether
// lane key c is masked (a tile of masked keys only is skipped, as the kernel does).
template <class Masked>
double banded_lane_pairs(int64_t len, int64_t wl, int64_t wr, const ops::BandedTiling& t, Masked masked) {
  double pairs = 0;
  for (int64_t r0 = 0; r0 < len; r0 += t.q_rows) {
    const int64_t nr = std::min(t.q_rows, len - r0);
    const int64_t kb = std::max<int64_t>(0, r0 - wl), ke = std::min(len, r0 + nr + wr);
    for (int64_t c0 = kb; c0 < ke; c0 += t.k_cols) {
      const int64_t nc = std::min(t.k_cols, ke - c0);
      bool all_masked = true;
      for (int64_t c = c0; c < c0 + nc && all_masked; ++c) all_masked = masked(c);
      if (all_masked) continue;
      const int64_t ra = std::max(r0, c0 - wr), rb = std::min(r0 + nr, c0 + nc + wl);
      if (ra < rb) pairs += static_cast<double>(rb - ra) * static_cast<double>(nc);
    }
  }
  return pairs;
}

class LongformerMixer final : public SequenceMixer {
 public:
  LongformerMixer(const MixerOptions& o, const LongformerOptions& own)
      : d_(o.d_model), h_(o.n_heads), causal_(o.causal), own_(own) {
    TORCH_CHECK(h_ > 0 && d_ % h_ == 0, "longformer: d_model (", d_, ") must be divisible by n_heads (", h_, ")");
    TORCH_CHECK(own_.window >= 0, "longformer: window must be >= 0, got ", own_.window);
    TORCH_CHECK(own_.dilation >= 1, "longformer: dilation must be >= 1, got ", own_.dilation);
    TORCH_CHECK(own_.global_tokens >= 0, "longformer: global_tokens must be >= 0, got ", own_.global_tokens);
    dh_ = d_ / h_;
    wl_ = causal_ ? own_.window : own_.window / 2;
    wr_ = causal_ ? 0 : own_.window / 2;
    qkv_ = register_module("qkv", torch::nn::Linear(d_, 3 * d_));
    out_ = register_module("out", torch::nn::Linear(d_, d_));
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  Tensor forward(const Tensor& x, const Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "longformer: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    if (mask.defined())
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "longformer: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ",
                  mask.sizes());
    auto qkv = cerebra::linear(qkv_, x).view({B, n, 3, h_, dh_}).permute({2, 0, 3, 1, 4});  // (3, B, h, n, dh)
    const Tensor q = qkv[0], k = qkv[1], v = qkv[2];
    const double scale = 1.0 / std::sqrt(static_cast<double>(dh_));
    const int64_t g = std::min(own_.global_tokens, n);
    Tensor y;  // (B, h, n, dh)
    if (g == 0 || n == 0) {
      y = ops::banded_attention(q, k, v, mask, wl_, wr_, own_.dilation, scale);
    } else {
      y = window_and_global(q, k, v, mask, g, scale);
    }
    return cerebra::linear(out_, y.transpose(1, 2).reshape({B, n, d_}));
  }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_), dh = static_cast<double>(dh_);
    const double H = static_cast<double>(h_);
    const double projections = 2.0 * N * d * 3.0 * d + 2.0 * N * d * d;
    if (n == 0) return 0.0;
    const int64_t g = std::min(own_.global_tokens, n), dil = own_.dilation;
    const ops::BandedTiling tiling;
    double pairs = 0;  // per head, summed over the kernel's lanes
    if (g == 0) {
      const int64_t wl = std::min(wl_, n), wr = std::min(wr_, n), di = std::min(dil, n);
      for (int64_t r = 0; r < di; ++r)
        pairs += banded_lane_pairs((n - r + di - 1) / di, wl, wr, tiling, [](int64_t) { return false; });
      return projections + H * 4.0 * pairs * dh;
    }
    const int64_t A = (n + dil - 1) / dil, L = 2 * A * dil;
    const int64_t wl = std::min(2 * wl_, L), wr = std::min(2 * wr_ + 1, L);
    for (int64_t r = 0; r < dil; ++r) {
      // Lane index c: even = real token (c / 2)·dil + r (masked when global or beyond n), odd = sink.
      pairs += banded_lane_pairs(2 * A, wl, wr, tiling, [&](int64_t c) {
        if (c % 2) return false;
        const int64_t i = (c / 2) * dil + r;
        return i < g || i >= n;
      });
    }
    const double G = static_cast<double>(g);
    const double global = 4.0 * N * G * d + (causal_ ? 0.0 : 4.0 * G * N * d);
    return projections + H * 4.0 * pairs * (dh + 1.0) + global;
  }
  bool is_causal() const override { return causal_; }

  // x: (B, m, d), the m tokens after the state.position tokens seen -> (B, m, d); see the header comment.
  Tensor step(const Tensor& x, MixerState& state) override {
    if (!causal_) throw std::logic_error("step: this mixer is not causal, so it cannot generate token by token");
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "longformer: step x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1), t = state.position, dil = own_.dilation;
    const int64_t g = own_.global_tokens, reach = own_.window * dil;  // the window's oldest key: i - reach
    auto qkv = cerebra::linear(qkv_, x).view({B, m, 3, h_, dh_}).permute({2, 0, 3, 1, 4});  // (3, B, h, m, dh)
    const Tensor q = qkv[0], k = qkv[1], v = qkv[2];
    auto& kg = state.tensors["k_global"];
    auto& vg = state.tensors["v_global"];
    auto& kw = state.tensors["k_window"];
    auto& vw = state.tensors["v_window"];
    if (!kg.defined()) {  // a fresh state
      TORCH_CHECK(t == 0, "longformer: step state at position ", t, " holds no keys");
      kg = torch::zeros({B, h_, 0, dh_}, q.options());
      vg = kg;
      kw = kg;
      vw = kg;
    }
    TORCH_CHECK(kg.size(0) == B && kg.size(1) == h_ && kg.size(2) == std::min(g, t) &&
                    kw.size(2) == std::min(reach, t),
                "longformer: step state does not match position ", t, " and batch ", B);
    // Global keys: the chunk's tokens at positions < g join them.
    const int64_t new_global = std::clamp<int64_t>(g - t, 0, m);
    if (new_global > 0) {
      kg = torch::cat({kg, k.narrow(2, 0, new_global)}, 2);
      vg = torch::cat({vg, v.narrow(2, 0, new_global)}, 2);
    }
    const int64_t G = kg.size(2), L = kw.size(2);
    const Tensor kl = torch::cat({kw, k}, 2), vl = torch::cat({vw, v}, 2);  // positions t - L .. t + m - 1
    const auto lopts = torch::TensorOptions().dtype(torch::kLong);
    const Tensor qpos = torch::arange(t, t + m, lopts).view({m, 1});
    const Tensor gpos = torch::arange(G, lopts).view({1, G});
    const Tensor lpos = torch::arange(t - L, t + m, lopts).view({1, L + m});
    const Tensor back = qpos - lpos;  // how far key j is behind query i
    const Tensor in_window = back.ge(0).logical_and(back.le(reach)).logical_and(back.remainder(dil).eq(0))
                                 .logical_and(lpos.ge(g));                                  // (m, L + m)
    const Tensor allowed = torch::cat({gpos.le(qpos).expand({m, G}), in_window}, 1);       // (m, G + L + m)
    const double scale = 1.0 / std::sqrt(static_cast<double>(dh_));
    auto scores = torch::matmul(q * scale, torch::cat({kg, kl}, 2).transpose(-2, -1));   // (B, h, m, G + L + m)
    // Every query has a key (position 0 when g > 0, itself when g = 0), so no row is all -inf.
    auto probs = torch::softmax(scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity()), -1);
    const Tensor y = torch::matmul(probs, torch::cat({vg, vl}, 2));  // (B, h, m, dh)
    // The window cache keeps the last min(reach, t + m) tokens.
    const int64_t keep = std::min(reach, L + m);
    kw = kl.narrow(2, L + m - keep, keep).clone(torch::MemoryFormat::Contiguous);  // a copy: no view of kl
    vw = vl.narrow(2, L + m - keep, keep).clone(torch::MemoryFormat::Contiguous);
    state.position += m;
    return cerebra::linear(out_, y.transpose(1, 2).reshape({B, m, d_}));
  }
  bool has_recurrent_step() const override { return causal_; }
  nlohmann::json own_options() const override {
    return {{"window", own_.window}, {"dilation", own_.dilation}, {"global_tokens", own_.global_tokens}};
  }

 private:
  // q, k, v: (B, h, n, dh), mask (B, n) or undefined, 0 < g <= n -> (B, h, n, dh); see the header comment.
  Tensor window_and_global(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, int64_t g,
                           double scale) {
    const int64_t B = q.size(0), H = q.size(1), n = q.size(2), dh = q.size(3), dil = own_.dilation;
    const auto bool_opts = torch::TensorOptions().dtype(torch::kBool);
    const Tensor real = mask.defined() ? mask : torch::ones({B, n}, bool_opts);
    const auto pos = torch::arange(n, torch::TensorOptions().dtype(torch::kLong));

    // Scores over the global keys: allowed (B, 1, n, g).
    const Tensor kg = k.narrow(2, 0, g), vg = v.narrow(2, 0, g);
    Tensor allowed = real.narrow(1, 0, g).view({B, 1, 1, g}).expand({B, 1, n, g});
    if (causal_) allowed = allowed.logical_and(pos.narrow(0, 0, g).view({1, g}).le(pos.view({n, 1}))).view({B, 1, n, g});
    const Tensor row_any = allowed.any(-1, /*keepdim=*/true);  // (B, 1, n, 1)
    auto sg = torch::matmul(q, kg.transpose(-2, -1)) * scale;  // (B, h, n, g)
    // Rows with no global key get finite scores (no NaN anywhere, also not in gradients) and zero weight.
    sg = sg.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity())
             .masked_fill(row_any.logical_not(), 0.0);
    const Tensor lse_g = torch::logsumexp(sg, -1, /*keepdim=*/true);  // (B, h, n, 1)
    const Tensor pg = torch::exp(sg - lse_g) * row_any.to(q.scalar_type());
    const Tensor out_g = torch::matmul(pg, vg);  // (B, h, n, dh)

    // The doubled sequence: A blocks of [dil real positions | dil sinks], real token i = a·dil + r at 2·a·dil + r.
    const int64_t A = (n + dil - 1) / dil, np = A * dil, L = 2 * np;
    const auto a_of = torch::div(pos, dil, "floor");
    const Tensor m = (torch::clamp_max(a_of, wl_) + torch::clamp_max(A - 1 - a_of, wr_) + 1).to(q.scalar_type());
    const Tensor extra = (lse_g - torch::log(m).view({1, 1, n, 1})) / scale;  // (B, h, n, 1)
    auto ones = torch::ones({B, H, n, 1}, q.options()), zeros = torch::zeros({B, H, n, 1}, q.options());
    auto interleave = [&](const Tensor& real_rows, const Tensor& sink_row) {  // (B, h, n, c), (c) -> (B, h, L, c)
      const int64_t c = real_rows.size(3);
      auto r = torch::constant_pad_nd(real_rows, {0, 0, 0, np - n}).view({B, H, A, 1, dil, c});
      auto s = sink_row.view({1, 1, 1, 1, 1, c}).expand({B, H, A, 1, dil, c});
      return torch::cat({r, s}, 3).reshape({B, H, L, c});
    };
    auto sink_k = torch::zeros({dh + 1}, q.options());
    sink_k[dh] = 1.0;
    const Tensor Q2 = interleave(torch::cat({q, extra}, -1), torch::zeros({dh + 1}, q.options()));
    const Tensor K2 = interleave(torch::cat({k, zeros}, -1), sink_k);
    const Tensor V2 = interleave(torch::cat({v, ones}, -1), torch::zeros({dh + 1}, q.options()));
    // Key mask: real, non-global, within n; sinks on when the sequence has a real global key.
    const Tensor key_real = real.logical_and(pos.ge(g).view({1, n}));
    const Tensor has_global = real.narrow(1, 0, g).any(1, /*keepdim=*/true);  // (B, 1)
    const Tensor kr = torch::constant_pad_nd(key_real, {0, np - n}, 0).view({B, A, 1, dil});
    const Tensor ks = has_global.view({B, 1, 1, 1}).expand({B, A, 1, dil});
    const Tensor mask2 = torch::cat({kr, ks}, 2).reshape({B, L}).contiguous();

    const Tensor o2 = ops::banded_attention(Q2, K2, V2, mask2, 2 * wl_, 2 * wr_ + 1, dil, scale);  // (B, h, L, dh+1)
    const Tensor o = o2.view({B, H, A, 2, dil, dh + 1}).select(3, 0).reshape({B, H, np, dh + 1}).narrow(2, 0, n);
    const Tensor alpha = o.narrow(3, dh, 1);
    Tensor y = o.narrow(3, 0, dh) + (1.0 - alpha) * out_g;
    if (causal_) return y;

    // Global rows (non-causal): dense attention over every real key.
    auto sr = torch::matmul(q.narrow(2, 0, g), k.transpose(-2, -1)) * scale;  // (B, h, g, n)
    const Tensor key_ok = real.view({B, 1, 1, n});
    const Tensor any_key = real.any(1).view({B, 1, 1, 1});
    sr = sr.masked_fill(key_ok.logical_not(), -std::numeric_limits<double>::infinity())
             .masked_fill(any_key.logical_not(), 0.0);
    const Tensor yr = torch::matmul(torch::softmax(sr, -1) * any_key.to(q.scalar_type()), v);  // (B, h, g, dh)
    return torch::cat({yr, y.narrow(2, g, n - g)}, 2);
  }

  int64_t d_, h_, dh_ = 0, wl_ = 0, wr_ = 0;
  bool causal_;
  LongformerOptions own_;
  torch::nn::Linear qkv_{nullptr}, out_{nullptr};
};

MixerRegistration reg(define_mixer<LongformerOptions>(
    "longformer",
    {{"window", ValueType::Int, "8",
      "longformer: window w (non-causal: w/2 keys each side; causal: w keys to the left); aft: local window s",
      {}, ""},
     {"dilation", ValueType::Int, "1", "longformer: step between the window's keys", {}, ""},
     {"global_tokens", ValueType::Int, "1",
      "longformer: the first g positions attend to all and are attended by all (causal: by the later positions)", {},
      ""}},
    [](const Config& c) {
      return LongformerOptions{c.get_int("window"), c.get_int("dilation"), c.get_int("global_tokens")};
    },
    [](const MixerOptions& o, const LongformerOptions& own) { return std::make_shared<LongformerMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
