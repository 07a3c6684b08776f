// Gated dilated convolutions (GLU, Dauphin et al. 2017) as a SequenceMixer ("cnn").
//
// cnn_depth sub-layers; sub-layer i convolves d channels to 2d with kernel kernel_size and dilation 2^i, and the GLU
// halves them back: g_i = a ∘ σ(b). h_1 = g_1, h_{i+1} = h_i + g_{i+1} (residual between sub-layers); y = h_depth.
// Causal (MixerOptions::causal): all padding on the left, so y_t sees x_{t - (k-1)(2^depth - 1)} .. x_t; otherwise
// "same" padding split around t. Padded tokens are zeroed before every convolution, so their values never reach a
// real token. Own options (CnnOptions, config keys of the same names): kernel_size (3), cnn_depth (2).
// Generation state (step, causal only): per sub-layer i, "conv<i>" holds the last (k-1)·2^i inputs of that
// convolution, (B, d, (k-1)·2^i), zeros before the first token (the left padding of the full forward).
#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "cerebra/models/mixer.h"
#include "cerebra/models/pruning.h"

namespace cerebra {

namespace {

namespace F = torch::nn::functional;

struct CnnOptions {
  int64_t kernel_size = 3, cnn_depth = 2;
};

class CnnMixer final : public SequenceMixer {
 public:
  CnnMixer(const MixerOptions& o, const CnnOptions& own)
      : d_(o.d_model), k_(own.kernel_size), depth_(own.cnn_depth), causal_(o.causal) {
    TORCH_CHECK(d_ > 0 && k_ > 0 && depth_ > 0 && depth_ <= 16, "cnn: d_model, kernel_size must be positive and ",
                "cnn_depth in [1, 16], got ", d_, ", ", k_, ", ", depth_);
    for (int64_t i = 0; i < depth_; ++i) {
      convs_.push_back(register_module("conv" + std::to_string(i),
                                       torch::nn::Conv1d(torch::nn::Conv1dOptions(d_, 2 * d_, k_).dilation(1 << i))));
    }
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "cnn: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    torch::Tensor m;  // (B, 1, n) 0/1 in x's dtype
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "cnn: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ", mask.sizes());
      m = mask.to(x.scalar_type()).unsqueeze(1);
    }
    auto h = x.transpose(1, 2);  // (B, d, n)
    for (int64_t i = 0; i < depth_; ++i) {
      const int64_t span = (k_ - 1) * (int64_t{1} << i);  // receptive field of this sub-layer minus one
      const int64_t left = causal_ ? span : span / 2;
      auto in = m.defined() ? h * m : h;
      auto g = F::glu(convs_[i]->forward(F::pad(in, F::PadFuncOptions({left, span - left}))), 1);  // (B, c_i, n)
      if (static_cast<size_t>(i) < kept_.size() && kept_[i].defined())  // pruned: c_i < d kept channels
        g = torch::zeros({B, d_, n}, g.options()).index_copy(1, kept_[i], g);
      h = i == 0 ? g : h + g;
    }
    return h.transpose(1, 2);  // (B, n, d)
  }

  // x: (B, m, d) -> (B, m, d): each convolution runs over its buffered inputs followed by the chunk's.
  torch::Tensor step(const torch::Tensor& x, MixerState& state) override {
    if (!causal_) return SequenceMixer::step(x, state);  // refuses: not causal
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "cnn: step: x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1);
    if (m == 0) return torch::zeros_like(x);
    auto h = x.transpose(1, 2);  // (B, d, m)
    for (int64_t i = 0; i < depth_; ++i) {
      const int64_t span = (k_ - 1) * (int64_t{1} << i);
      auto& buffer = state.tensors["conv" + std::to_string(i)];
      if (!buffer.defined()) buffer = torch::zeros({B, d_, span}, x.options());
      TORCH_CHECK(buffer.size(0) == B, "cnn: step: the state holds a batch of ", buffer.size(0), ", x has ", B);
      auto in = torch::cat({buffer, h}, 2);  // (B, d, span + m): the span inputs before the chunk, then the chunk
      buffer = in.narrow(2, in.size(2) - span, span).clone();
      auto g = F::glu(convs_[i]->forward(in), 1);  // (B, c_i, m)
      if (static_cast<size_t>(i) < kept_.size() && kept_[i].defined())
        g = torch::zeros({B, d_, m}, g.options()).index_copy(1, kept_[i], g);
      h = i == 0 ? g : h + g;
    }
    state.position += m;
    return h.transpose(1, 2);  // (B, m, d)
  }
  bool has_recurrent_step() const override { return causal_; }

  // Per convolution (aten::convolution): 2·n·C_in·C_out·k = 2·n·d·2c_i·k, c_i = d until channels are pruned.
  double flops(int64_t n) const override {
    double f = 0;
    for (int64_t i = 0; i < depth_; ++i) f += static_cast<double>(channels(i)) * channel_flops(n);
    return f;
  }
  bool is_causal() const override { return causal_; }
  nlohmann::json own_options() const override { return {{"kernel_size", k_}, {"cnn_depth", depth_}}; }

  // ---- structured pruning: output channels of each gated convolution (a GLU channel j = conv rows j and c + j).
  // A pruned sub-layer writes its c_i channels back into d through the buffer kept<i> (original channel indices).
  std::vector<PrunableGroup> prunable_groups(int64_t n) const override {
    std::vector<PrunableGroup> g;
    for (int64_t i = 0; i < depth_; ++i) g.push_back({"channels", "conv" + std::to_string(i), channels(i), channel_flops(n)});
    return g;
  }
  torch::Tensor unit_taylor(size_t i) const override {
    const auto& c = convs_.at(i);
    auto gw = grad_times_weight(c->weight).sum(2).sum(1) + grad_times_weight(c->bias);  // (2 c_i)
    return gw.view({2, -1}).sum(0);
  }
  void prune_units(size_t i, const std::vector<int64_t>& keep) override {
    torch::NoGradGuard ng;
    const int64_t c = channels(static_cast<int64_t>(i));
    auto idx = index_tensor(keep);
    auto rows = torch::cat({idx, idx + c});
    const auto& old = convs_.at(i);
    torch::nn::Conv1d conv(torch::nn::Conv1dOptions(d_, 2 * static_cast<int64_t>(keep.size()), k_).dilation(1 << i));
    conv->weight.copy_(old->weight.index_select(0, rows));
    conv->bias.copy_(old->bias.index_select(0, rows));
    conv->train(old->is_training());
    convs_[i] = torch::nn::Conv1d(replace_module("conv" + std::to_string(i), conv));
    if (kept_.size() < convs_.size()) kept_.resize(convs_.size());
    auto orig = kept_[i].defined() ? kept_[i].index_select(0, idx) : idx;
    if (kept_[i].defined())
      kept_[i].set_(orig.clone());  // the registered buffer, resized in place
    else
      kept_[i] = register_buffer("kept" + std::to_string(i), orig);
  }
  void mask_units(size_t i, const std::vector<int64_t>& keep) override {
    torch::NoGradGuard ng;
    const auto& c = convs_.at(i);
    for (int64_t j = 0; j < channels(static_cast<int64_t>(i)); ++j) {
      if (std::find(keep.begin(), keep.end(), j) != keep.end()) continue;
      c->weight[j].zero_();  // the GLU's linear half: a = 0 gives a·σ(b) = 0
      c->bias[j].zero_();
    }
  }

 private:
  int64_t channels(int64_t i) const { return convs_.at(static_cast<size_t>(i))->weight.size(0) / 2; }
  double channel_flops(int64_t n) const {  // one GLU channel: two output rows of 2·n·d·k
    return 2.0 * static_cast<double>(n) * static_cast<double>(d_) * 2.0 * static_cast<double>(k_);
  }

  int64_t d_, k_, depth_;
  bool causal_;
  std::vector<torch::nn::Conv1d> convs_;
  std::vector<torch::Tensor> kept_;  // per sub-layer: original channel indices kept (undefined = all)
};

MixerRegistration reg(define_mixer<CnnOptions>(
    "cnn",
    {{"kernel_size", ValueType::Int, "3", "cnn: kernel of each gated dilated convolution", {}, ""},
     {"cnn_depth", ValueType::Int, "2", "cnn: gated convolutions per mixer (dilations 1, 2, 4, ...)", {}, ""}},
    [](const Config& c) { return CnnOptions{c.get_int("kernel_size"), c.get_int("cnn_depth")}; },
    [](const MixerOptions& o, const CnnOptions& own) { return std::make_shared<CnnMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
