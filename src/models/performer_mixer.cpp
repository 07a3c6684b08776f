// Performer self-attention (Choromanski et al. 2021, FAVOR+) as a SequenceMixer ("performer"): softmax attention
// approximated with m positive orthogonal random features, multi-head, linear in n.
//
//   x = q·dh^(-1/4) (and k likewise), φ(x) = exp(ω x - |x|²/2 - c) / √m (+ ε for queries), ω: (m, dh) orthogonal Gaussian rows
//   (blocks of dh orthonormal rows scaled by the norms of Gaussian vectors), shared by the heads, kept as a buffer.
//   y_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_j φ(k_j): values carry an extra column of ones, so numerator and
//   denominator come from the same products.
// The stabiliser c (detached) is the row max for a query and the max over the real keys of the sequence (and
// head) for keys; both cancel in the ratio (keys carry no ε, so the key stabiliser cancels exactly). ε = 1e-4/√m
// on the query features keeps the denominator positive.
// Causal form: the same ratio with prefix sums Σ_{j<=i}, computed in chunks of kChunk tokens: within a chunk the
// masked (c x c) product of features, across chunks the exclusive prefix sum of the chunk states φ(K_c)ᵀ [V_c, 1].
// (The key stabiliser is taken over the whole sequence: it cancels, so a later key changes earlier outputs only in
// their last bits, unless it exceeds an earlier key's exponent by ~87 (float underflow of the earlier features).)
// Padding mask: padded keys' features are zeroed (they contribute to neither sum); padded query rows are
// computed and not read.
// Causal generation (step): the state is the causal form's running sum per head, "kv" (B, h, M, dh + 1) =
// Σ_j φ(k_j) [v_j, 1]ᵀ over the t = state.position tokens seen (its last column is z = Σ_j φ(k_j)), with the keys'
// stabiliser "key_max" (B, h, 1, 1), the max of the key exponents seen: a fixed size, B·h·(M·(dh + 1) + 1) floats.
// A chunk of m new tokens raises the stabiliser to its own max if larger (rescaling the sum), then reads
// y_i = φ(q_i)ᵀ (kv + Σ_{t<=j<=i} φ(k_j) [v_j, 1]ᵀ) with a masked (m x m) product, as one chunk of the forward does.
// The features ω are the module's buffer, the ones forward() uses; step() never redraws them (with redraw, a
// training forward between two steps would make the state's features stale).
//
// Own options (PerformerOptions): n_features m (64); redraw (false): draw new features at every training forward.
//
// flops(n) (forward, per sequence, h heads of width dh): 8·n·d² (projections) + 4·n·m·d (features of q and k) and
// non-causal 4·n·m·h·(dh + 1) (key-value state and its read-out); causal, over n' = n rounded up to chunks of c:
// h·(2·n'·c·m + 2·n'·c·(dh + 1) + 4·n'·m·(dh + 1)).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace {

using torch::Tensor;

constexpr int64_t kChunk = 64;  // causal form: tokens per chunk

struct PerformerOptions {
  int64_t n_features = 64;
  bool redraw = false;
};

class PerformerMixer final : public SequenceMixer {
 public:
  PerformerMixer(const MixerOptions& o, const PerformerOptions& own)
      : d_(o.d_model), h_(o.n_heads), causal_(o.causal), own_(own) {
    TORCH_CHECK(h_ > 0 && d_ % h_ == 0, "performer: d_model (", d_, ") must be divisible by n_heads (", h_, ")");
    TORCH_CHECK(own_.n_features > 0, "performer: n_features must be positive, got ", own_.n_features);
    dh_ = d_ / h_;
    qkv_ = register_module("qkv", torch::nn::Linear(d_, 3 * d_));
    out_ = register_module("out", torch::nn::Linear(d_, d_));
    omega_ = register_buffer("omega", draw_features());
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  Tensor forward(const Tensor& x, const Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "performer: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    if (own_.redraw && is_training()) {
      torch::NoGradGuard guard;
      omega_.copy_(draw_features());
    }
    auto qkv = cerebra::linear(qkv_, x).view({B, n, 3, h_, dh_}).permute({2, 0, 3, 1, 4});  // (3, B, h, n, dh)
    const Tensor q = qkv[0], k = qkv[1], v = qkv[2];
    Tensor m;  // (B, 1, n, 1) 0/1
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "performer: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ",
                  mask.sizes());
      m = mask.view({B, 1, n, 1});
    }
    const Tensor fq = features(q, /*query=*/true, m), fk = features(k, /*query=*/false, m);  // (B, h, n, M)
    const Tensor v1 = torch::cat({v, torch::ones({B, h_, n, 1}, v.options())}, -1);         // (B, h, n, dh + 1)
    const Tensor o = causal_ ? causal_product(fq, fk, v1) : torch::matmul(fq, torch::matmul(fk.transpose(-2, -1), v1));
    const Tensor y = o.narrow(3, 0, dh_) / o.narrow(3, dh_, 1).clamp_min(std::numeric_limits<float>::min());
    return cerebra::linear(out_, y.transpose(1, 2).reshape({B, n, d_}));
  }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_), M = static_cast<double>(own_.n_features);
    const double H = static_cast<double>(h_), w = static_cast<double>(dh_ + 1);
    const double base = 2.0 * N * d * 3.0 * d + 2.0 * N * d * d  // projections
                        + 2.0 * 2.0 * N * M * d;                  // ω q, ω k
    if (!causal_) return base + H * 4.0 * N * M * w;
    if (n == 0) return base;
    const int64_t c = std::min(kChunk, n);
    const double np = static_cast<double>((n + c - 1) / c * c), C = static_cast<double>(c);
    return base + H * (2.0 * np * C * M + 2.0 * np * C * w + 4.0 * np * M * w);
  }
  bool is_causal() const override { return causal_; }

  // x: (B, m, d), the m tokens after the state.position tokens seen -> (B, m, d); see the header comment.
  Tensor step(const Tensor& x, MixerState& state) override {
    if (!causal_) throw std::logic_error("step: this mixer is not causal, so it cannot generate token by token");
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "performer: step x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1), M = own_.n_features;
    if (m == 0) return torch::zeros({B, 0, d_}, x.options());
    auto qkv = cerebra::linear(qkv_, x).view({B, m, 3, h_, dh_}).permute({2, 0, 3, 1, 4});  // (3, B, h, m, dh)
    const Tensor q = qkv[0], k = qkv[1], v = qkv[2];
    const Tensor fq = features(q, /*query=*/true, Tensor());                              // (B, h, m, M)
    const Tensor gk = log_features(k);                                                    // (B, h, m, M)
    Tensor top = std::get<0>(gk.detach().flatten(2).max(-1, /*keepdim=*/true)).unsqueeze(-1);  // (B, h, 1, 1)
    auto& kv = state.tensors["kv"];
    auto& key_max = state.tensors["key_max"];
    Tensor prev;  // (B, h, M, dh + 1): the sum so far under the new stabiliser
    if (kv.defined()) {
      TORCH_CHECK(kv.size(0) == B && kv.size(1) == h_ && kv.size(2) == M && kv.size(3) == dh_ + 1,
                  "performer: step state holds ", kv.sizes(), ", expected (", B, ", ", h_, ", ", M, ", ", dh_ + 1, ")");
      top = torch::maximum(top, key_max);
      prev = kv * torch::exp(key_max - top);
    } else {
      prev = torch::zeros({B, h_, M, dh_ + 1}, q.options());
    }
    const Tensor fk = torch::exp(gk - top) / std::sqrt(static_cast<double>(M));
    const Tensor v1 = torch::cat({v, torch::ones({B, h_, m, 1}, v.options())}, -1);  // (B, h, m, dh + 1)
    const Tensor tri = torch::ones({m, m}, torch::TensorOptions().dtype(torch::kBool)).tril();
    const Tensor intra = torch::matmul(torch::matmul(fq, fk.transpose(-2, -1)).masked_fill(tri.logical_not(), 0.0), v1);
    const Tensor o = intra + torch::matmul(fq, prev);  // (B, h, m, dh + 1)
    kv = prev + torch::matmul(fk.transpose(-2, -1), v1);
    key_max = top;
    state.position += m;
    const Tensor y = o.narrow(3, 0, dh_) / o.narrow(3, dh_, 1).clamp_min(std::numeric_limits<float>::min());
    return cerebra::linear(out_, y.transpose(1, 2).reshape({B, m, d_}));
  }
  bool has_recurrent_step() const override { return causal_; }
  nlohmann::json own_options() const override { return {{"n_features", own_.n_features}, {"redraw", own_.redraw}}; }

 private:
  // (n_features, dh): blocks of dh orthonormal rows, each row scaled to the norm of a Gaussian vector.
  Tensor draw_features() const {
    const int64_t M = own_.n_features;
    std::vector<Tensor> blocks;
    for (int64_t done = 0; done < M; done += dh_) {
      auto qr = torch::linalg_qr(torch::randn({dh_, dh_}));
      blocks.push_back(std::get<0>(qr).t().narrow(0, 0, std::min(dh_, M - done)));
    }
    const Tensor norms = torch::randn({M, dh_}).norm(2, 1, /*keepdim=*/true);
    return (torch::cat(blocks, 0) * norms).contiguous();
  }

  // x: (B, h, n, dh) -> the log of the unnormalised features, ω x - |x|²/2 for x scaled by dh^(-1/4): (B, h, n, M)
  Tensor log_features(const Tensor& x) const {
    const double s = std::pow(static_cast<double>(dh_), -0.25);
    const Tensor xs = x * s;
    const Tensor proj = torch::matmul(xs, omega_.to(x.scalar_type()).t());  // (B, h, n, M)
    return proj - xs.pow(2).sum(-1, /*keepdim=*/true) * 0.5;
  }

  // x: (B, h, n, dh), m: (B, 1, n, 1) bool or undefined -> φ(x): (B, h, n, M)
  Tensor features(const Tensor& x, bool query, const Tensor& m) const {
    const Tensor g = log_features(x);
    const double M = static_cast<double>(own_.n_features);
    if (query) {
      const Tensor stab = std::get<0>(g.detach().max(-1, /*keepdim=*/true));
      return (torch::exp(g - stab) + 1e-4) / std::sqrt(M);
    }
    Tensor p = g.detach();
    if (m.defined()) p = p.masked_fill(m.logical_not(), -std::numeric_limits<double>::infinity());
    Tensor stab = std::get<0>(p.flatten(2).max(-1, /*keepdim=*/true)).unsqueeze(-1);  // (B, h, 1, 1)
    stab = stab.masked_fill(torch::isinf(stab), 0.0);                                 // no real key
    Tensor f = torch::exp(g - stab) / std::sqrt(M);
    if (m.defined()) f = f * m.to(f.scalar_type());
    return f;
  }

  // fq, fk: (B, h, n, M), v1: (B, h, n, w) -> (B, h, n, w): Σ_{j<=i} (fq_i · fk_j) v1_j, in chunks.
  Tensor causal_product(const Tensor& fq, const Tensor& fk, const Tensor& v1) const {
    const int64_t B = fq.size(0), H = fq.size(1), n = fq.size(2), M = fq.size(3), w = v1.size(3);
    if (n == 0) return torch::zeros({B, H, 0, w}, v1.options());
    const int64_t c = std::min(kChunk, n), C = (n + c - 1) / c, np = C * c;
    auto chunks = [&](const Tensor& t) {  // (B, h, n, e) -> (B, h, C, c, e), zero-padded
      return torch::constant_pad_nd(t, {0, 0, 0, np - n}).view({B, H, C, c, t.size(3)});
    };
    const Tensor q = chunks(fq), k = chunks(fk), vv = chunks(v1);
    const Tensor tri = torch::ones({c, c}, torch::TensorOptions().dtype(torch::kBool)).tril();
    const Tensor intra = torch::matmul(torch::matmul(q, k.transpose(-2, -1)).masked_fill(tri.logical_not(), 0.0), vv);
    const Tensor states = torch::matmul(k.transpose(-2, -1), vv);  // (B, h, C, M, w)
    const Tensor prev = states.cumsum(2) - states;                  // exclusive prefix over chunks
    const Tensor out = intra + torch::matmul(q, prev);              // (B, h, C, c, w)
    (void)M;
    return out.reshape({B, H, np, w}).narrow(2, 0, n);
  }

  int64_t d_, h_, dh_ = 0;
  bool causal_;
  PerformerOptions own_;
  torch::nn::Linear qkv_{nullptr}, out_{nullptr};
  Tensor omega_;
};

MixerRegistration reg(define_mixer<PerformerOptions>(
    "performer",
    {{"n_features", ValueType::Int, "64", "performer: positive orthogonal random features m (FAVOR+)", {}, ""},
     {"redraw", ValueType::Bool, "false", "performer: draw new random features at every training forward", {}, ""}},
    [](const Config& c) { return PerformerOptions{c.get_int("n_features"), c.get_bool("redraw")}; },
    [](const MixerOptions& o, const PerformerOptions& own) { return std::make_shared<PerformerMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
