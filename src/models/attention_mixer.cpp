// Multi-head softmax self-attention as a SequenceMixer ("attention"); the Transformer baseline's mixer.
//
// Its own option `attention_impl` selects how the softmax(q kᵀ) v core runs (all compute the same function):
//   naive  materialised (B, h, n, n) scores and probabilities, torch ops
//   tiled  cerebra::ops::tiled_attention: online softmax over score tiles, O(n) extra memory
//   auto   (default) tiled for sequences of at least kTiledFromLength tokens, naive below (README, "Kernels", has
//          the measured times of both)
//
// flops(n) (forward, per sequence, 2 per multiply-add): 8·n·d² for the q/k/v and output projections plus the two
// attention products. Non-causal: 4·n²·d. Causal, naive: also 4·n²·d (the full score matrix is computed, then
// masked). Causal, tiled: exactly what the kernel runs for an unpadded sequence with its default tiling, i.e.
// 4·d·Σ_tiles nr·min(n, r0 + nr) over the query tiles [r0, r0 + nr) of q_rows rows (roughly half of 4·n²·d).
// Key tiles that are entirely padding are skipped by the kernel; flops(n) does not know the padding and counts them.
//
// Causal generation (step): the state is a key/value cache, tensors "k" and "v" of shape (B, h, t, dh) holding the
// keys and values of the t = state.position tokens seen (it grows by 2·B·h·dh floats per token). A chunk of m new
// tokens appends its keys and values, and its query at position t + r attends the cached keys and the chunk's keys
// up to its own (materialised (B, h, m, t + m) scores, torch ops).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <nlohmann/json.hpp>

#include "cerebra/models/mixer.h"
#include "cerebra/ops/attention.h"
#include "cerebra/models/pruning.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace {

// Shortest sequence for which `auto` runs the tiled kernel.
constexpr int64_t kTiledFromLength = 64;

struct AttentionOptions {
  std::string impl = "auto";  // attention_impl: auto | naive | tiled
};

class AttentionMixer final : public SequenceMixer {
 public:
  AttentionMixer(const MixerOptions& o, const AttentionOptions& own)
      : d_(o.d_model), h_(o.n_heads), causal_(o.causal), own_(own) {
    TORCH_CHECK(d_ % h_ == 0, "attention: d_model (", d_, ") must be divisible by n_heads (", h_, ")");
    dh_ = d_ / h_;
    TORCH_CHECK(own_.impl == "naive" || own_.impl == "tiled" || own_.impl == "auto",
                "attention: unknown attention_impl '", own_.impl, "'; expected auto|naive|tiled");
    qkv_ = register_module("qkv", torch::nn::Linear(d_, 3 * d_));
    out_ = register_module("out", torch::nn::Linear(d_, d_));
  }

  // x: (B, n, d), mask: (B, n) bool -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "attention: x must be (B, n, ", d_, "), got ", x.sizes());
    // h_ heads of width dh_ (fewer than n_heads once pruned): inner width h_·dh_.
    const int64_t B = x.size(0), n = x.size(1), dh = dh_, inner = h_ * dh_;
    auto qkv = cerebra::linear(qkv_, x).view({B, n, 3, h_, dh}).permute({2, 0, 3, 1, 4});  // (3, B, h, n, dh)
    auto q = qkv[0], k = qkv[1], v = qkv[2];
    const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
    if (mask.defined())
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}), "attention: mask must be (B, n) = (", B, ", ", n,
                  "), got ", mask.sizes());
    if (tiled(n)) {
      const auto key_mask = mask.defined() ? mask.to(torch::kBool) : torch::Tensor();
      auto y = ops::tiled_attention(q, k, v, key_mask, causal_, scale).transpose(1, 2).reshape({B, n, inner});
      return cerebra::linear(out_, y);
    }
    auto scores = torch::matmul(q * scale, k.transpose(-2, -1));  // (B,h,n,n); scaling q spares a pass over n²
    torch::Tensor allowed;  // (B or 1, 1, n or 1, n) true = may attend
    if (mask.defined()) allowed = mask.view({B, 1, 1, n});
    if (causal_) {
      auto tri = torch::ones({n, n}, torch::TensorOptions().dtype(torch::kBool)).tril().view({1, 1, n, n});
      allowed = allowed.defined() ? allowed.logical_and(tri) : tri;
    }
    if (allowed.defined()) scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    auto probs = torch::softmax(scores, -1);
    if (allowed.defined()) probs = probs.masked_fill(allowed.logical_not(), 0.0);  // rows with no key: zeros, not NaN
    auto y = torch::matmul(probs, v).transpose(1, 2).reshape({B, n, inner});
    return cerebra::linear(out_, y);
  }

  double flops(int64_t n) const override {
    // With pruned heads the inner width h_·dh_ replaces d in the projections' outputs and in the products.
    const double N = static_cast<double>(n), d = static_cast<double>(d_), di = static_cast<double>(h_ * dh_);
    const double projections = 2.0 * N * d * 3.0 * di   // q, k, v projections
                                + 2.0 * N * di * d;     // output projection
    if (causal_ && tiled(n)) {
      // The kernel's forward runs, per head and query tile [r0, r0 + nr), keys [0, min(n, r0 + nr)): two products.
      const int64_t br = ops::AttentionTiling{}.q_rows;
      double pairs = 0.0;  // Σ nr · keys attended by the tile
      for (int64_t r0 = 0; r0 < n; r0 += br) {
        const int64_t nr = std::min(br, n - r0);
        pairs += static_cast<double>(nr) * static_cast<double>(std::min(n, r0 + nr));
      }
      return projections + 4.0 * pairs * di;
    }
    return projections
           + 2.0 * N * N * di      // scores
           + 2.0 * N * N * di;     // probabilities x values
  }
  bool is_causal() const override { return causal_; }

  // x: (B, m, d), the m tokens after the state.position tokens in the cache -> (B, m, d); appends to the cache.
  torch::Tensor step(const torch::Tensor& x, MixerState& state) override {
    if (!causal_) throw std::logic_error("step: this mixer is not causal, so it cannot generate token by token");
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "attention: step x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1), dh = dh_, inner = h_ * dh_, t = state.position;
    auto qkv = cerebra::linear(qkv_, x).view({B, m, 3, h_, dh}).permute({2, 0, 3, 1, 4});  // (3, B, h, m, dh)
    auto& kc = state.tensors["k"];
    auto& vc = state.tensors["v"];
    TORCH_CHECK(!kc.defined() || (kc.size(0) == B && kc.size(1) == h_ && kc.size(2) == t),
                "attention: step state holds keys ", kc.sizes(), ", expected (", B, ", ", h_, ", ", t, ", ", dh, ")");
    kc = kc.defined() ? torch::cat({kc, qkv[1]}, 2) : qkv[1].clone(torch::MemoryFormat::Contiguous);  // (B,h,t+m,dh)
    vc = vc.defined() ? torch::cat({vc, qkv[2]}, 2) : qkv[2].clone(torch::MemoryFormat::Contiguous);
    state.position += m;
    const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
    auto scores = torch::matmul(qkv[0] * scale, kc.transpose(-2, -1));  // (B, h, m, t + m)
    // Query r (position t + r) sees keys c <= t + r.
    const auto opts = torch::TensorOptions().dtype(torch::kLong);
    const auto future = torch::arange(t + m, opts).view({1, t + m}).gt(torch::arange(t, t + m, opts).view({m, 1}));
    auto probs = torch::softmax(scores.masked_fill(future, -std::numeric_limits<float>::infinity()), -1);
    auto y = torch::matmul(probs, vc).transpose(1, 2).reshape({B, m, inner});
    return cerebra::linear(out_, y);
  }
  bool has_recurrent_step() const override { return causal_; }
  nlohmann::json own_options() const override { return {{"attention_impl", own_.impl}}; }
  // Whether a sequence of n tokens runs the tiled kernel.
  bool tiled(int64_t n) const { return own_.impl == "tiled" || (own_.impl == "auto" && n >= kTiledFromLength); }

  // ---- structured pruning: heads. Every term of flops(n) is proportional to the number of heads.
  std::vector<PrunableGroup> prunable_groups(int64_t n) const override {
    return {{"heads", "heads", h_, flops(n) / static_cast<double>(h_)}};
  }
  // Head j owns rows j·dh.. of the q, k and v blocks of qkv (and their biases) and columns j·dh.. of out.
  torch::Tensor unit_taylor(size_t) const override {
    auto gw_in = grad_times_weight(qkv_->weight).sum(1) + grad_times_weight(qkv_->bias);  // (3·h·dh)
    auto gw_out = grad_times_weight(out_->weight).sum(0);                                  // (h·dh)
    return gw_in.view({3, h_, dh_}).sum(2).sum(0) + gw_out.view({h_, dh_}).sum(1);
  }
  void prune_units(size_t, const std::vector<int64_t>& keep) override {
    const int64_t inner = h_ * dh_;
    auto rows = torch::cat({unit_columns(keep, dh_, 0), unit_columns(keep, dh_, inner), unit_columns(keep, dh_, 2 * inner)});
    qkv_ = torch::nn::Linear(replace_module("qkv", select_linear(qkv_, rows, {})));
    out_ = torch::nn::Linear(replace_module("out", select_linear(out_, {}, unit_columns(keep, dh_))));
    h_ = static_cast<int64_t>(keep.size());
  }
  // A head whose values and output columns are zero contributes nothing.
  void mask_units(size_t, const std::vector<int64_t>& keep) override {
    torch::NoGradGuard g;
    for (int64_t j = 0; j < h_; ++j) {
      if (std::find(keep.begin(), keep.end(), j) != keep.end()) continue;
      qkv_->weight.narrow(0, 2 * h_ * dh_ + j * dh_, dh_).zero_();
      qkv_->bias.narrow(0, 2 * h_ * dh_ + j * dh_, dh_).zero_();
      out_->weight.narrow(1, j * dh_, dh_).zero_();
    }
  }

 private:
  int64_t d_, h_, dh_ = 0;
  bool causal_;
  AttentionOptions own_;
  torch::nn::Linear qkv_{nullptr}, out_{nullptr};
};

MixerRegistration reg(define_mixer<AttentionOptions>(
    "attention",
    {{"attention_impl", ValueType::String, "auto",
      "attention: softmax core: naive (materialised n x n scores), tiled (online softmax, O(n) memory), auto (tiled "
      "from 64 tokens, naive below)", {"auto", "naive", "tiled"}, ""}},
    [](const Config& c) { return AttentionOptions{c.get_string("attention_impl")}; },
    [](const MixerOptions& o, const AttentionOptions& own) { return std::make_shared<AttentionMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
