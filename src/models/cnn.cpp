// Gated dilated convolutions (GLU, Dauphin et al. 2017) as a SequenceMixer ("cnn").
//
// cnn_depth sub-layers; sub-layer i convolves d channels to 2d with kernel kernel_size and dilation 2^i, and the GLU
// halves them back: g_i = a ∘ σ(b). h_1 = g_1, h_{i+1} = h_i + g_{i+1} (residual between sub-layers); y = h_depth.
// Causal (MixerOptions::causal): all padding on the left, so y_t sees x_{t - (k-1)(2^depth - 1)} .. x_t; otherwise
// "same" padding split around t. Padded tokens are zeroed before every convolution, so their values never reach a
// real token. MixerOptions::extra: "kernel_size" (3), "cnn_depth" (2).
#include <torch/torch.h>

#include <string>
#include <vector>

#include "cerebra/mixer.h"

namespace cerebra {

namespace {

namespace F = torch::nn::functional;

class CnnMixer final : public SequenceMixer {
 public:
  explicit CnnMixer(const MixerOptions& o)
      : d_(o.d_model),
        k_(static_cast<int64_t>(o.get("kernel_size", 3))),
        depth_(static_cast<int64_t>(o.get("cnn_depth", 2))),
        causal_(o.causal) {
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
      auto g = F::glu(convs_[i]->forward(F::pad(in, F::PadFuncOptions({left, span - left}))), 1);  // (B, d, n)
      h = i == 0 ? g : h + g;
    }
    return h.transpose(1, 2);  // (B, n, d)
  }

  // Per convolution (aten::convolution): 2·n·C_in·C_out·k = 2·n·d·2d·k.
  double flops(int64_t n) const override {
    const double d = static_cast<double>(d_);
    return static_cast<double>(depth_) * 2.0 * static_cast<double>(n) * d * 2.0 * d * static_cast<double>(k_);
  }
  bool is_causal() const override { return causal_; }

 private:
  int64_t d_, k_, depth_;
  bool causal_;
  std::vector<torch::nn::Conv1d> convs_;
};

MixerRegistration reg("cnn", [](const MixerOptions& o) { return std::make_shared<CnnMixer>(o); });

}  // namespace
}  // namespace cerebra
