// Linformer self-attention (Wang et al. 2020) as a SequenceMixer ("linformer"): keys and values are projected along
// the sequence to k rows by learned E, F of shape (k, linformer_max_len), shared by the heads ("headwise sharing"):
//   K' = E[:, :n] K, V' = F[:, :n] V (per head), y = softmax(scale · Q K'ᵀ) V', then the output projection.
//
// Own options (LinformerOptions): proj_k k (64); linformer_max_len (4096), the longest sequence the projections
// cover; a longer one is an error naming the option. (The key is not `max_len`: that config key belongs to the
// wordnet task.)
// Padding mask: the padded rows of K and V are zeroed before the projection, so a padded key contributes nothing
// and a sequence padded at its end gives its real positions the same output as alone. (A hole inside a sequence
// still shifts nothing: projections are by position.)
// No causal form: every projected row mixes the whole sequence; constructing with causal = true throws.
//
// flops(n) (forward, per sequence): 8·n·d² (projections) + 4·k·n·d (E K and F V) + 4·n·k·d (scores and values).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <stdexcept>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace {

using torch::Tensor;

struct LinformerOptions {
  int64_t proj_k = 64, max_len = 4096;
};

class LinformerMixer final : public SequenceMixer {
 public:
  LinformerMixer(const MixerOptions& o, const LinformerOptions& own) : d_(o.d_model), h_(o.n_heads), own_(own) {
    if (o.causal)
      throw std::invalid_argument(
          "linformer has no causal form (its projections along the sequence mix every position); use a causal "
          "mixer such as attention, longformer, performer or aft for causal tasks");
    TORCH_CHECK(h_ > 0 && d_ % h_ == 0, "linformer: d_model (", d_, ") must be divisible by n_heads (", h_, ")");
    TORCH_CHECK(own_.proj_k > 0, "linformer: proj_k must be positive, got ", own_.proj_k);
    TORCH_CHECK(own_.max_len > 0, "linformer: linformer_max_len must be positive, got ", own_.max_len);
    dh_ = d_ / h_;
    qkv_ = register_module("qkv", torch::nn::Linear(d_, 3 * d_));
    out_ = register_module("out", torch::nn::Linear(d_, d_));
    const double bound = 1.0 / std::sqrt(static_cast<double>(own_.proj_k));
    E_ = register_parameter("E", torch::empty({own_.proj_k, own_.max_len}).uniform_(-bound, bound));
    F_ = register_parameter("F", torch::empty({own_.proj_k, own_.max_len}).uniform_(-bound, bound));
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  Tensor forward(const Tensor& x, const Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "linformer: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    if (n > own_.max_len)
      throw std::invalid_argument("linformer: sequence length " + std::to_string(n) + " exceeds linformer_max_len = " +
                                  std::to_string(own_.max_len) +
                                  " (the length its projections E, F cover); set linformer_max_len >= " +
                                  std::to_string(n));
    auto qkv = cerebra::linear(qkv_, x).view({B, n, 3, h_, dh_}).permute({2, 0, 3, 1, 4});  // (3, B, h, n, dh)
    Tensor q = qkv[0], k = qkv[1], v = qkv[2];
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "linformer: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ",
                  mask.sizes());
      const Tensor m = mask.to(x.scalar_type()).view({B, 1, n, 1});
      k = k * m;
      v = v * m;
    }
    const Tensor E = E_.narrow(1, 0, n), F = F_.narrow(1, 0, n);  // (k, n)
    const Tensor kp = torch::matmul(E, k), vp = torch::matmul(F, v);  // (B, h, k, dh)
    const double scale = 1.0 / std::sqrt(static_cast<double>(dh_));
    const Tensor probs = torch::softmax(torch::matmul(q * scale, kp.transpose(-2, -1)), -1);  // (B, h, n, k)
    const Tensor y = torch::matmul(probs, vp).transpose(1, 2).reshape({B, n, d_});
    return cerebra::linear(out_, y);
  }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_), K = static_cast<double>(own_.proj_k);
    return 2.0 * N * d * 3.0 * d + 2.0 * N * d * d  // projections
           + 2.0 * 2.0 * K * N * d                  // E K, F V
           + 2.0 * 2.0 * N * K * d;                 // scores, probabilities x values
  }
  bool is_causal() const override { return false; }
  nlohmann::json own_options() const override {
    return {{"proj_k", own_.proj_k}, {"linformer_max_len", own_.max_len}};
  }

 private:
  int64_t d_, h_, dh_ = 0;
  LinformerOptions own_;
  torch::nn::Linear qkv_{nullptr}, out_{nullptr};
  Tensor E_, F_;
};

MixerRegistration reg(define_mixer<LinformerOptions>(
    "linformer",
    {{"proj_k", ValueType::Int, "64", "linformer: rows k that keys and values are projected to along the sequence",
      {}, ""},
     {"linformer_max_len", ValueType::Int, "4096",
      "linformer: longest sequence the learned projections E, F (k x linformer_max_len) cover", {}, ""}},
    [](const Config& c) { return LinformerOptions{c.get_int("proj_k"), c.get_int("linformer_max_len")}; },
    [](const MixerOptions& o, const LinformerOptions& own) { return std::make_shared<LinformerMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
