// Reformer LSH self-attention (Kitaev et al. 2020) as a SequenceMixer ("reformer").
//
// Shared QK: one projection gives each head's queries and keys; keys are the unit-normalised vectors, queries are
// not, scores are q·k̂/√dh. Per hash round r, each position's bucket is argmax([x̂R_r, -x̂R_r]) for a random rotation
// R_r (dh x b/2, drawn once at construction and saved with the model, shared by the heads). Positions are sorted by
// (bucket, position), cut into chunks of c, and every query attends to the keys of its own chunk and of the
// previous chunk (chunk 0 has none before it). A query never attends to itself unless it has no other key (its
// score is -1e5, as in the paper: under shared QK a token's own key dominates). The rounds' outputs are combined by
// their log-sum-exps: y = Σ_r softmax_r(lse_r)·o_r (no correction for a pair met in several rounds).
//
// Own options (ReformerOptions; keys prefixed so they share no name with another mixer's):
//   lsh_rounds  hash rounds (2)
//   lsh_buckets buckets b per round: even, or 1 (no hashing: every position in one bucket) (8)
//   lsh_chunk   chunk length c (32)
// Exactness: with lsh_buckets = 1, lsh_rounds = 1 and lsh_chunk >= n the layer is full shared-QK attention.
// Padding: padded positions go to a bucket after every real one, so the real positions' order, chunks and outputs
// are those of the sequence alone; padded keys are masked.
// No causal form: which keys share a query's chunk depends on how many positions (future ones included) hash to
// lower buckets, so a causal mask on positions would still let the future choose the keys; constructing with
// causal = true throws. Reversible layers are not implemented (activations are stored as usual).
//
// flops(n) (forward, per sequence), with n_c = ceil(n/c)·c the length padded to whole chunks:
//   6·n·d² (shared QK, V and output projections) + n·d·rounds·b (hashing; 0 when b = 1)
//   + 8·rounds·n_c·c·d (scores and values: every chunk of c queries against 2c keys, all heads)
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <stdexcept>
#include <string>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace {

using torch::Tensor;

struct ReformerOptions {
  int64_t rounds = 2, buckets = 8, chunk = 32;
};

class ReformerMixer final : public SequenceMixer {
 public:
  ReformerMixer(const MixerOptions& o, const ReformerOptions& own) : d_(o.d_model), h_(o.n_heads), own_(own) {
    if (o.causal)
      throw std::invalid_argument(
          "reformer has no causal form (the keys in a query's chunk depend on how later positions hash); use a "
          "causal mixer such as attention, longformer, performer or aft for causal tasks");
    TORCH_CHECK(h_ > 0 && d_ % h_ == 0, "reformer: d_model (", d_, ") must be divisible by n_heads (", h_, ")");
    TORCH_CHECK(own_.rounds >= 1, "reformer: lsh_rounds must be >= 1, got ", own_.rounds);
    TORCH_CHECK(own_.buckets == 1 || (own_.buckets >= 2 && own_.buckets % 2 == 0),
                "reformer: lsh_buckets must be 1 or an even number >= 2, got ", own_.buckets);
    TORCH_CHECK(own_.chunk >= 1, "reformer: lsh_chunk must be >= 1, got ", own_.chunk);
    dh_ = d_ / h_;
    qk_ = register_module("qk", torch::nn::Linear(d_, d_));
    v_ = register_module("v", torch::nn::Linear(d_, d_));
    out_ = register_module("out", torch::nn::Linear(d_, d_));
    if (own_.buckets > 1)
      rotations_ = register_buffer("rotations", torch::randn({dh_, own_.rounds * (own_.buckets / 2)}));
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  Tensor forward(const Tensor& x, const Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "reformer: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1), R = own_.rounds, c = own_.chunk;
    const int64_t nc = (n + c - 1) / c, np = nc * c;
    Tensor valid = torch::ones({B, n}, torch::TensorOptions().dtype(torch::kBool));
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "reformer: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ",
                  mask.sizes());
      valid = mask;
    }
    auto heads = [&](const Tensor& t) { return t.view({B, n, h_, dh_}).transpose(1, 2); };  // (B, h, n, dh)
    Tensor q = heads(cerebra::linear(qk_, x)), v = heads(cerebra::linear(v_, x));
    Tensor k = q / q.norm(2, -1, true).clamp_min(1e-6);

    // Buckets (B, h, n, R); padded positions go to bucket b, after every real one.
    Tensor bucket;
    if (own_.buckets > 1) {
      const Tensor proj = torch::matmul(k.detach(), rotations_.to(x.scalar_type()))
                              .view({B, h_, n, R, own_.buckets / 2});
      bucket = torch::cat({proj, -proj}, -1).argmax(-1);
    } else {
      bucket = torch::zeros({B, h_, n, R}, torch::kLong);
    }
    bucket = bucket.masked_fill(valid.logical_not().view({B, 1, n, 1}), own_.buckets);
    if (np > n) {  // pad to whole chunks; the pad positions are masked keys in the last bucket
      auto pad = [&](const Tensor& t) { return torch::constant_pad_nd(t, {0, 0, 0, np - n}); };
      q = pad(q), k = pad(k), v = pad(v);
      bucket = torch::constant_pad_nd(bucket, {0, 0, 0, np - n}, static_cast<double>(own_.buckets));
      valid = torch::constant_pad_nd(valid, {0, np - n}, 0);
    }

    // Sort each round by (bucket, position): order (B, h, R, np) holds positions.
    const Tensor pos = torch::arange(np, torch::kLong);
    const Tensor order = (bucket.permute({0, 1, 3, 2}) * np + pos).argsort(int64_t{-1}, false);
    auto sorted = [&](const Tensor& t) {  // (B, h, np, e) -> (B, h, R, nc, c, e)
      const int64_t e = t.size(-1);
      return t.unsqueeze(2).expand({B, h_, R, np, e}).gather(3, order.unsqueeze(-1).expand({B, h_, R, np, e}))
          .view({B, h_, R, nc, c, e});
    };
    auto with_previous = [&](const Tensor& t) {  // chunk i's keys followed by chunk i-1's: (.., nc, 2c, e)
      return torch::cat({t, t.roll(1, 3)}, 4);
    };
    const Tensor qs = sorted(q), ks = with_previous(sorted(k)), vs = with_previous(sorted(v));
    const Tensor qpos = order.view({B, h_, R, nc, c});
    const Tensor kpos = with_previous(qpos.unsqueeze(-1)).squeeze(-1);                           // (B, h, R, nc, 2c)
    const Tensor kvalid = valid.view({B, 1, 1, np}).expand({B, h_, R, np}).gather(3, order)       // (B, h, R, np)
                              .view({B, h_, R, nc, c, 1});
    Tensor kmask = with_previous(kvalid).squeeze(-1);                                             // (B, h, R, nc, 2c)
    const Tensor first = torch::zeros({nc, 2 * c}, torch::kBool);
    first[0].narrow(0, c, c).fill_(true);  // chunk 0 has no previous chunk
    kmask = kmask.logical_and(first.logical_not().view({1, 1, 1, nc, 2 * c}));

    const double scale = 1.0 / std::sqrt(static_cast<double>(dh_));
    Tensor s = torch::matmul(qs * scale, ks.transpose(-2, -1));  // (B, h, R, nc, c, 2c)
    s = s.masked_fill(kmask.unsqueeze(-2).logical_not(), -1e9);
    s = s.masked_fill(qpos.unsqueeze(-1).eq(kpos.unsqueeze(-2)).logical_and(kmask.unsqueeze(-2)), -1e5);
    const Tensor lse = s.logsumexp(-1, true);
    const Tensor o = torch::matmul(torch::exp(s - lse), vs);  // (B, h, R, nc, c, dh)

    // Back to positions; combine the rounds by their log-sum-exps.
    const Tensor undo = order.argsort(int64_t{-1}, false);  // (B, h, R, np)
    const Tensor ou = o.view({B, h_, R, np, dh_}).gather(3, undo.unsqueeze(-1).expand({B, h_, R, np, dh_}));
    const Tensor lu = lse.view({B, h_, R, np}).gather(3, undo);
    const Tensor w = torch::softmax(lu, 2).unsqueeze(-1);
    const Tensor y = (w * ou).sum(2).narrow(2, 0, n).transpose(1, 2).reshape({B, n, d_});
    return cerebra::linear(out_, y);
  }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_), R = static_cast<double>(own_.rounds);
    const double c = static_cast<double>(own_.chunk);
    const double np = std::ceil(N / c) * c;
    const double hashing = own_.buckets > 1 ? N * d * R * static_cast<double>(own_.buckets) : 0.0;
    return 6.0 * N * d * d + hashing + 8.0 * R * np * c * d;
  }
  bool is_causal() const override { return false; }
  nlohmann::json own_options() const override {
    return {{"lsh_rounds", own_.rounds}, {"lsh_buckets", own_.buckets}, {"lsh_chunk", own_.chunk}};
  }

 private:
  int64_t d_, h_, dh_ = 0;
  ReformerOptions own_;
  torch::nn::Linear qk_{nullptr}, v_{nullptr}, out_{nullptr};
  Tensor rotations_;
};

MixerRegistration reg(define_mixer<ReformerOptions>(
    "reformer",
    {{"lsh_rounds", ValueType::Int, "2", "reformer: hash rounds (outputs combined by their log-sum-exps)", {}, ""},
     {"lsh_buckets", ValueType::Int, "8", "reformer: buckets per round (even, or 1 for no hashing)", {}, ""},
     {"lsh_chunk", ValueType::Int, "32",
      "reformer: chunk length c; each query attends to its sorted chunk and the previous one (2c keys)", {}, ""}},
    [](const Config& c) {
      return ReformerOptions{c.get_int("lsh_rounds"), c.get_int("lsh_buckets"), c.get_int("lsh_chunk")};
    },
    [](const MixerOptions& o, const ReformerOptions& own) { return std::make_shared<ReformerMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
