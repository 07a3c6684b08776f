// RWKV-4 time mixing (Peng et al. 2023; BlinkDL's RWKV-LM RWKV_TimeMix) as a SequenceMixer ("rwkv").
//
//   x (B, n, d); xx = x shifted one token later (zeros at the first token)
//   k = key(mix_k ∘ x + (1 - mix_k) ∘ xx), v = value(..mix_v..), r = receptance(..mix_r..)    (d -> C each)
//   y = output(sigmoid(r) ∘ WKV(time_decay, time_first, k, v))                               (C -> d)
// with C = d_att (0 = d_model) and WKV the operator of ops/wkv.h. Channel mixing is the backbone's feed-forward
// block and is not part of the mixer.
// Initialisation as RWKV-LM's for a layer half-way through the stack (ratio_0_to_1 = ratio_1_to_almost0 = 0.5; a
// mixer does not know its depth): decay speeds -5 + 8·(c / (C-1))^(0.7 + 1.3·0.5), bonus ln 0.3 + zigzag, token-shift
// mixes (c / d)^0.5 (k), (c / d)^0.5 + 0.15 (v), (c / d)^0.25 (r).
//
// Own options (RwkvOptions, config keys of the same names): d_att (0 = d_model), wkv_impl (kernel = ops::wkv,
// reference = ops::wkv_ref).
// Padding mask: padded tokens enter as zeros (before the token shift, so the token after one sees zeros) and their
// keys are set to -1e4, so e^{k} of a padded token is exactly 0 next to any real token's: nothing of a padded token
// reaches a real one. Causal by construction (shift from the past, forward recurrence).
// Generation state (step): "shift", the last input seen (B, 1, d) (zeros before the first token), and the WKV state
// after the tokens seen, "wkv_aa", "wkv_bb", "wkv_pp" (B, C) each (ops::WkvState: the running sums scaled by e^{-pp}).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <vector>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"
#include "cerebra/ops/wkv.h"

namespace cerebra {

namespace {

struct RwkvOptions {
  int64_t d_att = 0;                // 0 = d_model
  std::string wkv_impl = "kernel";  // kernel | reference
};

// Key of a padded token: e^{k - p} underflows to exactly 0 in float and double next to any real token's exponent.
constexpr double kPadKey = -1e4;

class RwkvMixer final : public SequenceMixer {
 public:
  RwkvMixer(const MixerOptions& o, const RwkvOptions& own)
      : d_(o.d_model),
        C_(own.d_att > 0 ? own.d_att : o.d_model),
        impl_(own.wkv_impl == "reference" ? 1 : own.wkv_impl == "kernel" ? 0 : -1),
        own_(own) {
    TORCH_CHECK(d_ > 0 && C_ > 0, "rwkv: d_model and d_att must be positive, got ", d_, ", ", C_);
    TORCH_CHECK(impl_ >= 0, "rwkv: wkv_impl must be kernel or reference, got '", own.wkv_impl, "'");
    key_ = register_module("key", torch::nn::Linear(torch::nn::LinearOptions(d_, C_).bias(false)));
    value_ = register_module("value", torch::nn::Linear(torch::nn::LinearOptions(d_, C_).bias(false)));
    receptance_ = register_module("receptance", torch::nn::Linear(torch::nn::LinearOptions(d_, C_).bias(false)));
    output_ = register_module("output", torch::nn::Linear(torch::nn::LinearOptions(C_, d_).bias(false)));
    const double ratio_0_to_1 = 0.5, ratio_1_to_almost0 = 0.5;
    auto c = torch::arange(C_, torch::kDouble);
    auto decay = -5.0 + 8.0 * torch::pow(c / std::max<int64_t>(C_ - 1, 1), 0.7 + 1.3 * ratio_0_to_1);
    auto zigzag = 0.5 * (torch::remainder(c + 1, 3) - 1);
    auto ddd = torch::arange(d_, torch::kDouble) / static_cast<double>(d_);
    time_decay_ = register_parameter("time_decay", decay.to(torch::kFloat));
    time_first_ = register_parameter("time_first", (std::log(0.3) + zigzag).to(torch::kFloat));
    mix_k_ = register_parameter("time_mix_k", torch::pow(ddd, ratio_1_to_almost0).to(torch::kFloat));
    mix_v_ = register_parameter("time_mix_v", (torch::pow(ddd, ratio_1_to_almost0) + 0.3 * ratio_0_to_1).to(torch::kFloat));
    mix_r_ = register_parameter("time_mix_r", torch::pow(ddd, 0.5 * ratio_1_to_almost0).to(torch::kFloat));
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "rwkv: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    torch::Tensor xin = x;
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "rwkv: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ", mask.sizes());
      xin = x * mask.to(x.scalar_type()).unsqueeze(-1);
    }
    auto xx = torch::constant_pad_nd(xin.narrow(1, 0, n - 1), {0, 0, 1, 0});  // (B, n, d): token t sees t - 1
    auto k = cerebra::linear(key_, xx + mix_k_ * (xin - xx));                  // (B, n, C)
    auto v = cerebra::linear(value_, xx + mix_v_ * (xin - xx));                // (B, n, C)
    auto r = cerebra::linear(receptance_, xx + mix_r_ * (xin - xx));           // (B, n, C)
    if (mask.defined()) k = k.masked_fill(mask.logical_not().unsqueeze(-1), kPadKey);
    auto wkv = impl_ == 0 ? ops::wkv(time_decay_, time_first_, k, v) : ops::wkv_ref(time_decay_, time_first_, k, v);
    return cerebra::linear(output_, torch::sigmoid(r) * wkv);  // (B, n, d)
  }

  // x: (B, m, d) -> (B, m, d): the projections of the chunk at once, then the WKV recurrence token by token from
  // the state (ops::wkv_step, the recurrence the WKV kernel runs).
  torch::Tensor step(const torch::Tensor& x, MixerState& state) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "rwkv: step: x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1);
    if (m == 0) return torch::zeros_like(x);
    if (!state.has("shift")) {
      auto init = ops::wkv_initial_state(B, C_, x.options());
      state.tensors["shift"] = torch::zeros({B, 1, d_}, x.options());
      state.tensors["wkv_aa"] = init.aa;
      state.tensors["wkv_bb"] = init.bb;
      state.tensors["wkv_pp"] = init.pp;
    }
    auto& shift = state.tensors.at("shift");
    TORCH_CHECK(shift.size(0) == B, "rwkv: step: the state holds a batch of ", shift.size(0), ", x has ", B);
    auto xx = torch::cat({shift, x.narrow(1, 0, m - 1)}, 1);  // (B, m, d): token t sees t - 1
    shift = x.narrow(1, m - 1, 1).clone();
    auto k = cerebra::linear(key_, xx + mix_k_ * (x - xx)).unbind(1);  // m x (B, C)
    auto v = cerebra::linear(value_, xx + mix_v_ * (x - xx)).unbind(1);
    auto r = cerebra::linear(receptance_, xx + mix_r_ * (x - xx));     // (B, m, C)
    ops::WkvState st{state.tensors.at("wkv_aa"), state.tensors.at("wkv_bb"), state.tensors.at("wkv_pp")};
    std::vector<torch::Tensor> wkv;
    wkv.reserve(m);
    for (int64_t t = 0; t < m; ++t) wkv.push_back(ops::wkv_step(time_decay_, time_first_, k[t], v[t], st));
    state.tensors["wkv_aa"] = st.aa;
    state.tensors["wkv_bb"] = st.bb;
    state.tensors["wkv_pp"] = st.pp;
    state.position += m;
    return cerebra::linear(output_, torch::sigmoid(r) * torch::stack(wkv, 1));  // (B, m, d)
  }
  bool has_recurrent_step() const override { return true; }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_), C = static_cast<double>(C_);
    return 3.0 * 2.0 * N * d * C        // key, value, receptance
           + ops::wkv_flops(1, n, C_)   // WKV, 12·n·C
           + 2.0 * N * C * d;           // output
  }
  nlohmann::json own_options() const override { return {{"d_att", own_.d_att}, {"wkv_impl", own_.wkv_impl}}; }
  bool is_causal() const override { return true; }

 private:
  int64_t d_, C_;
  int impl_;
  RwkvOptions own_;
  torch::nn::Linear key_{nullptr}, value_{nullptr}, receptance_{nullptr}, output_{nullptr};
  torch::Tensor time_decay_, time_first_, mix_k_, mix_v_, mix_r_;
};

MixerRegistration reg(define_mixer<RwkvOptions>(
    "rwkv",
    {{"d_att", ValueType::Int, "0", "rwkv: width C of the keys, values and WKV state (0 = d_model)", {}, ""},
     {"wkv_impl", ValueType::String, "kernel", "rwkv: WKV operator: the CPU kernel or the torch-ops reference",
      {"kernel", "reference"}, ""}},
    [](const Config& c) { return RwkvOptions{c.get_int("d_att"), c.get_string("wkv_impl")}; },
    [](const MixerOptions& o, const RwkvOptions& own) { return std::make_shared<RwkvMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
