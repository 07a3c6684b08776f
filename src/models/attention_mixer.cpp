// Multi-head softmax self-attention as a SequenceMixer ("attention"); the Transformer baseline's mixer.
#include <torch/torch.h>

#include <cmath>

#include "cerebra/mixer.h"

namespace cerebra {

namespace {

class AttentionMixer final : public SequenceMixer {
 public:
  explicit AttentionMixer(const MixerOptions& o)
      : d_(o.d_model), h_(o.n_heads), causal_(o.causal), impl_(o.attention_impl) {
    TORCH_CHECK(d_ % h_ == 0, "attention: d_model (", d_, ") must be divisible by n_heads (", h_, ")");
    TORCH_CHECK(impl_ == "naive", "attention: implementation '", impl_, "' is not available; use naive");
    qkv_ = register_module("qkv", torch::nn::Linear(d_, 3 * d_));
    out_ = register_module("out", torch::nn::Linear(d_, d_));
  }

  // x: (B, n, d), mask: (B, n) bool -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "attention: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1), dh = d_ / h_;
    auto qkv = qkv_->forward(x).view({B, n, 3, h_, dh}).permute({2, 0, 3, 1, 4});  // (3, B, h, n, dh)
    auto q = qkv[0], k = qkv[1], v = qkv[2];
    auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(dh)));  // (B,h,n,n)
    torch::Tensor allowed;  // (B or 1, 1, n or 1, n) true = may attend
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}), "attention: mask must be (B, n) = (", B, ", ", n,
                  "), got ", mask.sizes());
      allowed = mask.view({B, 1, 1, n});
    }
    if (causal_) {
      auto tri = torch::ones({n, n}, torch::TensorOptions().dtype(torch::kBool)).tril().view({1, 1, n, n});
      allowed = allowed.defined() ? allowed.logical_and(tri) : tri;
    }
    if (allowed.defined()) scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    auto probs = torch::softmax(scores, -1);
    if (allowed.defined()) probs = probs.masked_fill(allowed.logical_not(), 0.0);  // rows with no key: zeros, not NaN
    auto y = torch::matmul(probs, v).transpose(1, 2).reshape({B, n, d_});
    return out_->forward(y);
  }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_);
    return 2.0 * N * d * 3.0 * d   // q, k, v projections
           + 2.0 * N * N * d       // scores
           + 2.0 * N * N * d       // probabilities x values
           + 2.0 * N * d * d;      // output projection
  }
  bool is_causal() const override { return causal_; }

 private:
  int64_t d_, h_;
  bool causal_;
  std::string impl_;
  torch::nn::Linear qkv_{nullptr}, out_{nullptr};
};

MixerRegistration reg("attention", [](const MixerOptions& o) { return std::make_shared<AttentionMixer>(o); });

}  // namespace
}  // namespace cerebra
