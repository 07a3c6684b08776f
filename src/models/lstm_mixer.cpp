// A unidirectional LSTM as a SequenceMixer ("lstm"). Written with linear ops (one GEMM for the input projection
// of all steps, one per step for the recurrence) so its FLOPs are visible to the measured counter; padded steps
// leave the state unchanged.
// Generation state (step): "h" and "c", the hidden and cell state after the tokens seen, (B, d) each.
#include <torch/torch.h>

#include <vector>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace {

class LstmMixer final : public SequenceMixer {
 public:
  explicit LstmMixer(const MixerOptions& o) : d_(o.d_model) {
    w_ih_ = register_module("w_ih", torch::nn::Linear(d_, 4 * d_));
    w_hh_ = register_module("w_hh", torch::nn::Linear(torch::nn::LinearOptions(d_, 4 * d_).bias(false)));
    // Forget-gate bias 1: the usual initialisation that lets gradients flow through long sequences early on.
    torch::NoGradGuard g;
    w_ih_->bias.slice(0, d_, 2 * d_).fill_(1.0);
  }

  // x: (B, n, d), mask: (B, n) bool -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "lstm: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    auto gates_x = cerebra::linear(w_ih_, x);  // (B, n, 4d): input projection of every step at once
    auto h = torch::zeros({B, d_}, x.options());
    auto c = torch::zeros({B, d_}, x.options());
    // unbind, not select: the backward of n selects would allocate n full-size gradients (quadratic in n).
    const auto steps = gates_x.unbind(1);
    const auto step_mask = mask.defined() ? mask.unbind(1) : std::vector<torch::Tensor>();
    std::vector<torch::Tensor> outs;
    outs.reserve(n);
    for (int64_t t = 0; t < n; ++t) {
      auto g = steps[t] + cerebra::linear(w_hh_, h);  // (B, 4d)
      auto ch = g.chunk(4, 1);
      auto i = torch::sigmoid(ch[0]), f = torch::sigmoid(ch[1]), gg = torch::tanh(ch[2]), o = torch::sigmoid(ch[3]);
      auto c_new = f * c + i * gg;
      auto h_new = o * torch::tanh(c_new);
      if (mask.defined()) {
        auto m = step_mask[t].unsqueeze(1);  // (B, 1)
        c = torch::where(m, c_new, c);
        h = torch::where(m, h_new, h);
      } else {
        c = c_new;
        h = h_new;
      }
      outs.push_back(h);
    }
    return torch::stack(outs, 1);
  }

  // x: (B, m, d) -> (B, m, d): one input projection for the chunk, then the recurrence from the state's (h, c).
  torch::Tensor step(const torch::Tensor& x, MixerState& state) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "lstm: step: x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1);
    if (!state.has("h")) {
      state.tensors["h"] = torch::zeros({B, d_}, x.options());
      state.tensors["c"] = torch::zeros({B, d_}, x.options());
    }
    auto h = state.tensors.at("h"), c = state.tensors.at("c");
    TORCH_CHECK(h.size(0) == B, "lstm: step: the state holds a batch of ", h.size(0), ", x has ", B);
    const auto steps = cerebra::linear(w_ih_, x).unbind(1);  // m x (B, 4d)
    std::vector<torch::Tensor> outs;
    outs.reserve(m);
    for (int64_t t = 0; t < m; ++t) {
      auto ch = (steps[t] + cerebra::linear(w_hh_, h)).chunk(4, 1);
      auto i = torch::sigmoid(ch[0]), f = torch::sigmoid(ch[1]), gg = torch::tanh(ch[2]), o = torch::sigmoid(ch[3]);
      c = f * c + i * gg;
      h = o * torch::tanh(c);
      outs.push_back(h);
    }
    state.tensors["h"] = h;
    state.tensors["c"] = c;
    state.position += m;
    return m > 0 ? torch::stack(outs, 1) : torch::zeros({B, 0, d_}, x.options());
  }
  bool has_recurrent_step() const override { return true; }

  double flops(int64_t n) const override {
    const double d = static_cast<double>(d_);
    return static_cast<double>(n) * (2.0 * d * 4.0 * d + 2.0 * d * 4.0 * d);  // input and recurrent projections
  }
  bool is_causal() const override { return true; }

 private:
  int64_t d_;
  torch::nn::Linear w_ih_{nullptr}, w_hh_{nullptr};
};

struct LstmOptions {};  // the LSTM has no options of its own

MixerRegistration reg(define_mixer<LstmOptions>(
    "lstm", {}, [](const Config&) { return LstmOptions{}; },
    [](const MixerOptions& o, const LstmOptions&) { return std::make_shared<LstmMixer>(o); }));

}  // namespace
}  // namespace cerebra
