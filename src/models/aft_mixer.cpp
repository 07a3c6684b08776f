// Attention Free Transformer (Zhai et al. 2021) as a SequenceMixer ("aft"): AFT-full, AFT-simple and AFT-local.
//
//   Q, K, V = projections of x (d channels each)
//   y_i = σ(Q_i) ⊙ Σ_j exp(K_j + w_ij) ⊙ V_j / Σ_j exp(K_j + w_ij)      (element-wise over the d channels)
//   full:   w_ij a learned pairwise position bias (aft_max_len x aft_max_len, one per layer as in the paper,
//           initialised to 0), j <= i when causal. Computed as two (n x n) x (n x d) products, exp(w) (exp(K) ⊙ V)
//           and exp(w) exp(K): O(n²·d) time, O(n·d + n²) memory. A sequence longer than aft_max_len is an error.
//   simple: w = 0 (non-causal: one softmax over the sequence per channel; causal: cumulative sums over j <= i)
//   local:  w_ij = b_h[i - j] for |i - j| < s and 0 beyond, a learned bias per head h (channels split into n_heads
//           groups) and per relative offset (i - j in (-s, s); causal: [0, s)), initialised to 0. Computed as the
//           simple sums plus a local correction Σ_{|i-j|<s} (exp(b_h[i-j]) - 1)·(...)_j, a depthwise convolution
//           of window 2s - 1 (causal: s) over exp(K) ⊙ V and exp(K): O(n·s·d), no (n, n) tensor.
//   (The paper's AFT-local keeps a learned (max_len x max_len) bias masked to the window; this mixer shares it
//   per relative offset, as the paper's AFT-conv does, so it needs no maximum length.)
//
// Own options (AftOptions): aft_variant full | simple | local (simple); window s for local (the key `window`, shared
// with longformer and cerebra; default 8); aft_max_len for full (512).
// exp(K) is stabilised by the channel's max over the sequence's real keys (detached; it cancels in the ratio. In
// the causal form a later key can change earlier outputs only in their last bits.) exp(w) is stabilised by its
// row max (detached; a common factor of a row's numerator and denominator).
// Padding mask: padded keys get weight 0; padded query rows are computed and not read.
//
// Causal generation (step), for t = state.position tokens seen:
//   simple: the running sums per channel, "num" = Σ_j exp(K_j - c) ⊙ V_j and "den" = Σ_j exp(K_j - c), (B, 1, d),
//           under the running max c = "key_max" of the keys seen (B, 1, d); a chunk whose keys exceed c raises it and
//           rescales the sums. Fixed size: 3·B·d floats.
//   local:  the same sums, plus the keys and values of the last min(t, s - 1) tokens, "k_recent"/"v_recent"
//           (B, ., d), the tokens the window's correction still reaches. Fixed size: B·d·(3 + 2·(s - 1)) floats
//           once t >= s - 1.
//   full:   a cache of every key and value seen, "k"/"v" (B, t, d) (the pairwise bias w_ij has no recurrent form):
//           grows by 2·B·d floats per token; a chunk's rows are the forward's rows [t, t + m) of both products.
//
// flops(n) (forward, per sequence): 8·n·d² (projections); full adds 4·n²·d (the two products; causal ones run
// dense with zeros above the diagonal); local adds the convolution, 2·n·2d·(2s - 1) (causal: 2·n·2d·s).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace {

using torch::Tensor;

struct AftOptions {
  std::string variant = "simple";  // full | simple | local
  int64_t window = 8, max_len = 512;
};

class AftMixer final : public SequenceMixer {
 public:
  AftMixer(const MixerOptions& o, const AftOptions& own)
      : d_(o.d_model),
        h_(o.n_heads),
        causal_(o.causal),
        local_(own.variant == "local"),
        full_(own.variant == "full"),
        own_(own) {
    TORCH_CHECK(own.variant == "simple" || own.variant == "local" || own.variant == "full",
                "aft: aft_variant must be full, simple or local, got '", own.variant, "'");
    TORCH_CHECK(h_ > 0 && d_ % h_ == 0, "aft: d_model (", d_, ") must be divisible by n_heads (", h_, ")");
    qkv_ = register_module("qkv", torch::nn::Linear(d_, 3 * d_));
    out_ = register_module("out", torch::nn::Linear(d_, d_));
    if (local_) {
      TORCH_CHECK(own.window >= 1, "aft: window must be >= 1 for aft_variant local, got ", own.window);
      taps_ = causal_ ? own.window : 2 * own.window - 1;
      bias_ = register_parameter("pos_bias", torch::zeros({h_, taps_}));  // offset o = i - j at index o + (s - 1)
    }                                                                      // (causal: at index o)
    if (full_) {
      TORCH_CHECK(own.max_len >= 1, "aft: aft_max_len must be >= 1 for aft_variant full, got ", own.max_len);
      bias_ = register_parameter("pair_bias", torch::zeros({own.max_len, own.max_len}));
    }
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  Tensor forward(const Tensor& x, const Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "aft: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    if (full_ && n > own_.max_len)
      throw std::invalid_argument("aft: sequence length " + std::to_string(n) + " exceeds aft_max_len = " +
                                  std::to_string(own_.max_len) +
                                  " (the positions its pairwise bias covers); set aft_max_len >= " + std::to_string(n));
    const auto qkv = cerebra::linear(qkv_, x);  // (B, n, 3d)
    const Tensor q = qkv.narrow(2, 0, d_), k = qkv.narrow(2, d_, d_), v = qkv.narrow(2, 2 * d_, d_);
    Tensor m;  // (B, n, 1) bool
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "aft: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ", mask.sizes());
      m = mask.view({B, n, 1});
    }
    Tensor kd = k.detach();
    if (m.defined()) kd = kd.masked_fill(m.logical_not(), -std::numeric_limits<double>::infinity());
    Tensor stab = std::get<0>(kd.max(1, /*keepdim=*/true));  // (B, 1, d)
    stab = stab.masked_fill(torch::isinf(stab), 0.0);
    // Padded keys are set to -inf before the exponential, so that their weight is exactly 0 and no inf * 0 arises
    // in the forward or the backward pass, whatever the padded inputs hold.
    Tensor logit = k - stab;
    if (m.defined()) logit = logit.masked_fill(m.logical_not(), -std::numeric_limits<double>::infinity());
    Tensor e = torch::exp(logit);
    const Tensor ev = e * v;
    Tensor num, den;  // (B, n, d)
    if (full_) {
      Tensor w = bias_.narrow(0, 0, n).narrow(1, 0, n);
      if (causal_) w = w.masked_fill(torch::ones({n, n}, torch::kBool).triu(1), -std::numeric_limits<double>::infinity());
      const Tensor ew = torch::exp(w - std::get<0>(w.detach().max(1, /*keepdim=*/true))).to(x.scalar_type());
      num = torch::matmul(ew, ev);
      den = torch::matmul(ew, e);
    } else if (causal_) {
      num = ev.cumsum(1);
      den = e.cumsum(1);
    } else {
      num = ev.sum(1, /*keepdim=*/true).expand({B, n, d_});
      den = e.sum(1, /*keepdim=*/true).expand({B, n, d_});
    }
    if (local_ && n > 0) {
      // Depthwise correction over [ev | e] (B, 2d, n): out[i] = Σ_t W[t] in[i + t - (s - 1)], W = (exp(b) - 1)
      // reversed (tap t holds offset o = i - j = s - 1 - t; non-causal offsets run to -(s - 1) on the right).
      const int64_t s = own_.window;
      const Tensor taps = (torch::exp(bias_) - 1.0).flip({1});                                    // (h, taps)
      const Tensor w = taps.repeat_interleave(d_ / h_, 0).repeat({2, 1}).unsqueeze(1);            // (2d, 1, taps)
      const Tensor in = torch::cat({ev, e}, 2).transpose(1, 2);                                   // (B, 2d, n)
      const Tensor padded = causal_ ? torch::constant_pad_nd(in, {s - 1, 0}) : torch::constant_pad_nd(in, {s - 1, s - 1});
      const Tensor corr = torch::conv1d(padded, w.to(in.scalar_type()), c10::optional<Tensor>(), torch::IntArrayRef{1},
                                          torch::IntArrayRef{0}, torch::IntArrayRef{1}, 2 * d_).transpose(1, 2);
      num = num + corr.narrow(2, 0, d_);
      den = den + corr.narrow(2, d_, d_);
    }
    const Tensor ratio = num / den.clamp_min(std::numeric_limits<float>::min());  // rows with no key: 0
    return cerebra::linear(out_, torch::sigmoid(q) * ratio);
  }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_);
    const double projections = 2.0 * N * d * 3.0 * d + 2.0 * N * d * d;
    if (full_) return projections + 4.0 * N * N * d;
    return projections + (local_ ? 2.0 * N * 2.0 * d * static_cast<double>(taps_) : 0.0);
  }
  bool is_causal() const override { return causal_; }

  // x: (B, m, d), the m tokens after the state.position tokens seen -> (B, m, d); see the header comment.
  Tensor step(const Tensor& x, MixerState& state) override {
    if (!causal_) throw std::logic_error("step: this mixer is not causal, so it cannot generate token by token");
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "aft: step x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1), t = state.position;
    if (m == 0) return torch::zeros({B, 0, d_}, x.options());
    const auto qkv = cerebra::linear(qkv_, x);  // (B, m, 3d)
    const Tensor q = qkv.narrow(2, 0, d_), k = qkv.narrow(2, d_, d_), v = qkv.narrow(2, 2 * d_, d_);
    const Tensor ratio = full_ ? full_step(k, v, t, state) : running_step(k, v, state);  // (B, m, d)
    state.position += m;
    return cerebra::linear(out_, torch::sigmoid(q) * ratio);
  }
  bool has_recurrent_step() const override { return causal_; }
  nlohmann::json own_options() const override {
    return {{"aft_variant", own_.variant}, {"window", own_.window}, {"aft_max_len", own_.max_len}};
  }

 private:
  // AFT-full, causal: rows [t, t + m) of the forward over the cached keys and values plus the chunk's k, v (B, m, d)
  // -> num / den (B, m, d); appends k, v to the cache.
  Tensor full_step(const Tensor& k, const Tensor& v, int64_t t, MixerState& state) const {
    const int64_t B = k.size(0), m = k.size(1), n = t + m;
    if (n > own_.max_len)
      throw std::invalid_argument("aft: sequence length " + std::to_string(n) + " exceeds aft_max_len = " +
                                  std::to_string(own_.max_len) +
                                  " (the positions its pairwise bias covers); set aft_max_len >= " + std::to_string(n));
    auto& kc = state.tensors["k"];
    auto& vc = state.tensors["v"];
    TORCH_CHECK(!kc.defined() || (kc.size(0) == B && kc.size(1) == t), "aft: step state holds keys ", kc.sizes(),
                ", expected (", B, ", ", t, ", ", d_, ")");
    kc = kc.defined() ? torch::cat({kc, k}, 1) : k.clone(torch::MemoryFormat::Contiguous);  // (B, n, d)
    vc = vc.defined() ? torch::cat({vc, v}, 1) : v.clone(torch::MemoryFormat::Contiguous);
    const Tensor stab = std::get<0>(kc.detach().max(1, /*keepdim=*/true));  // (B, 1, d)
    const Tensor e = torch::exp(kc - stab);
    // Row i = t + r of the bias sees the keys j <= i.
    const auto lopts = torch::TensorOptions().dtype(torch::kLong);
    const Tensor future = torch::arange(n, lopts).view({1, n}).gt(torch::arange(t, n, lopts).view({m, 1}));
    const Tensor w =
        bias_.narrow(0, t, m).narrow(1, 0, n).masked_fill(future, -std::numeric_limits<double>::infinity());
    const Tensor ew = torch::exp(w - std::get<0>(w.detach().max(1, /*keepdim=*/true))).to(k.scalar_type());  // (m, n)
    const Tensor num = torch::matmul(ew, e * vc), den = torch::matmul(ew, e);
    return num / den.clamp_min(std::numeric_limits<float>::min());
  }

  // AFT-simple and AFT-local, causal: the chunk's k, v (B, m, d) -> num / den (B, m, d) from the running sums (and,
  // local, the window's correction over the recent tokens); advances the sums.
  Tensor running_step(const Tensor& k, const Tensor& v, MixerState& state) const {
    const int64_t B = k.size(0), m = k.size(1);
    auto& key_max = state.tensors["key_max"];
    auto& num_sum = state.tensors["num"];
    auto& den_sum = state.tensors["den"];
    Tensor c = std::get<0>(k.detach().max(1, /*keepdim=*/true));  // (B, 1, d)
    Tensor num0, den0;  // the sums so far under the new max
    if (key_max.defined()) {
      TORCH_CHECK(key_max.size(0) == B, "aft: step state has batch ", key_max.size(0), ", x has ", B);
      c = torch::maximum(c, key_max);
      const Tensor rescale = torch::exp(key_max - c);
      num0 = num_sum * rescale;
      den0 = den_sum * rescale;
    } else {
      num0 = torch::zeros({B, 1, d_}, k.options());
      den0 = torch::zeros({B, 1, d_}, k.options());
    }
    const Tensor e = torch::exp(k - c), ev = e * v;
    Tensor num = num0 + ev.cumsum(1), den = den0 + e.cumsum(1);  // (B, m, d)
    key_max = c;
    num_sum = num.narrow(1, m - 1, 1).clone(torch::MemoryFormat::Contiguous);
    den_sum = den.narrow(1, m - 1, 1).clone(torch::MemoryFormat::Contiguous);
    if (local_) {
      // The forward's depthwise correction over [ev | e] of the recent tokens and the chunk, left-padded with zeros
      // to s - 1 positions before the chunk (positions before 0 contribute nothing).
      const int64_t s = own_.window;
      auto& kr = state.tensors["k_recent"];
      auto& vr = state.tensors["v_recent"];
      const Tensor ka = kr.defined() ? torch::cat({kr, k}, 1) : k, va = vr.defined() ? torch::cat({vr, v}, 1) : v;
      const int64_t L = ka.size(1) - m;  // recent tokens, <= s - 1
      const Tensor ea = torch::exp(ka - c);
      const Tensor taps = (torch::exp(bias_) - 1.0).flip({1});                                    // (h, taps)
      const Tensor w = taps.repeat_interleave(d_ / h_, 0).repeat({2, 1}).unsqueeze(1);            // (2d, 1, taps)
      const Tensor in = torch::cat({ea * va, ea}, 2).transpose(1, 2);                             // (B, 2d, L + m)
      const Tensor padded = torch::constant_pad_nd(in, {s - 1 - L, 0});                          // (B, 2d, s - 1 + m)
      const Tensor corr = torch::conv1d(padded, w.to(in.scalar_type()), c10::optional<Tensor>(), torch::IntArrayRef{1},
                                        torch::IntArrayRef{0}, torch::IntArrayRef{1}, 2 * d_).transpose(1, 2);
      num = num + corr.narrow(2, 0, d_);
      den = den + corr.narrow(2, d_, d_);
      const int64_t keep = std::min(s - 1, L + m);
      kr = ka.narrow(1, L + m - keep, keep).clone(torch::MemoryFormat::Contiguous);
      vr = va.narrow(1, L + m - keep, keep).clone(torch::MemoryFormat::Contiguous);
    }
    return num / den.clamp_min(std::numeric_limits<float>::min());
  }

  int64_t d_, h_, taps_ = 0;
  bool causal_, local_, full_;
  AftOptions own_;
  torch::nn::Linear qkv_{nullptr}, out_{nullptr};
  Tensor bias_;
};

MixerRegistration reg(define_mixer<AftOptions>(
    "aft",
    {{"aft_variant", ValueType::String, "simple",
      "aft: full (learned pairwise position bias, O(n^2 d)), simple (one weighted average over the sequence) or local "
      "(plus a learned per-head bias within the window)",
      {"full", "simple", "local"}, ""},
     {"window", ValueType::Int, "8",
      "longformer: window w (non-causal: w/2 keys each side; causal: w keys to the left); aft: local window s",
      {}, ""},
     {"aft_max_len", ValueType::Int, "512", "aft: longest sequence the pairwise bias of aft_variant full covers", {}, ""}},
    [](const Config& c) {
      return AftOptions{c.get_string("aft_variant"), c.get_int("window"), c.get_int("aft_max_len")};
    },
    [](const MixerOptions& o, const AftOptions& own) { return std::make_shared<AftMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
