// S4D (Gu et al. 2022; the standalone S4D block of state-spaces/s4) as a SequenceMixer ("s4d").
//
//   x (B, n, d) -> per channel h (H = d channels): y = K_h * x_h + D_h x_h (causal convolution by FFT, the kernel
//   computed from the diagonal SSM's parameters, ops/s4d.h) -> GELU -> Linear(d, 2d) -> GLU -> (B, n, d)
// S4D-Lin initialisation: A_n = -1/2 + i·π·n (n = 0..N/2-1, N = d_state), C complex standard normal, dt
// log-uniform in [1e-3, 1e-1] per channel, D standard normal.
//
// Own options (S4dOptions, config key of the same name): d_state N (16; N/2 complex modes per channel).
// Padding mask: padded tokens enter as zeros, so nothing of a padded token reaches a real one. Causal by
// construction (the convolution only looks back).
// Generation state (step): the SSM state per channel and mode after the tokens seen, x = Σ_{j<=t} λ^{t-j} u_j with
// λ = e^{dt·A} (the B̄ = (e^{dt·A} - 1)/A of the discretisation folded into C, as in ops/s4d.h's kernel
// K_l = 2·Re(Σ_n C̃_n λ_n^l), C̃ = C·B̄), as "state_re" and "state_im" (B, d, N/2) each.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"
#include "cerebra/ops/activations.h"
#include "cerebra/ops/s4d.h"

namespace cerebra {

namespace {

struct S4dOptions {
  int64_t d_state = 16;
};

class S4dMixer final : public SequenceMixer {
 public:
  S4dMixer(const MixerOptions& o, const S4dOptions& own) : d_(o.d_model), M_(own.d_state / 2), own_(own) {
    TORCH_CHECK(d_ > 0 && own.d_state >= 2 && own.d_state % 2 == 0, "s4d: d_model must be positive and d_state ",
                "even and at least 2, got ", d_, ", ", own.d_state);
    out_ = register_module("output", torch::nn::Linear(d_, 2 * d_));
    torch::NoGradGuard guard;
    log_dt_ = register_parameter(
        "log_dt", torch::rand({d_}) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3));
    log_A_real_ = register_parameter("log_A_real", torch::full({d_, M_}, std::log(0.5)));
    A_imag_ = register_parameter("A_imag", (M_PI * torch::arange(M_, torch::kFloat)).repeat({d_, 1}));
    C_ = register_parameter("C", torch::randn({d_, M_, 2}) * std::sqrt(0.5));
    D_ = register_parameter("D", torch::randn({d_}));
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "s4d: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    torch::Tensor xin = x;
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "s4d: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ", mask.sizes());
      xin = x * mask.to(x.scalar_type()).unsqueeze(-1);
    }
    auto u = xin.transpose(1, 2);                                            // (B, H, n)
    auto K = ops::s4d_kernel(log_dt_, log_A_real_, A_imag_, C_, n);         // (H, n)
    auto y = ops::causal_conv_fft(u, K) + u * D_.unsqueeze(-1);             // (B, H, n)
    y = ops::gelu(y).transpose(1, 2);                                        // (B, n, H)
    return torch::glu(cerebra::linear(out_, y), -1);                         // (B, n, d)
  }

  // x: (B, m, d) -> (B, m, d). Inside the chunk the same kernel and FFT convolution as forward(); the state x
  // carried in adds 2·Re(Σ_n C̃_n λ_n^{l+1} x_n) at chunk position l, and the state after the chunk is
  // λ^m ∘ x + Σ_j λ^{m-1-j} u_j.
  torch::Tensor step(const torch::Tensor& x, MixerState& state) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "s4d: step: x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1);
    if (m == 0) return torch::zeros_like(x);
    if (!state.has("state_re")) {
      state.tensors["state_re"] = torch::zeros({B, d_, M_}, x.options());
      state.tensors["state_im"] = torch::zeros({B, d_, M_}, x.options());
    }
    auto& xr = state.tensors.at("state_re");
    auto& xi = state.tensors.at("state_im");
    TORCH_CHECK(xr.size(0) == B, "s4d: step: the state holds a batch of ", xr.size(0), ", x has ", B);
    auto u = x.transpose(1, 2);                                                    // (B, H, m)
    auto K = ops::s4d_kernel(log_dt_, log_A_real_, A_imag_, C_, m);               // (H, m)
    auto y = ops::causal_conv_fft(u, K) + u * D_.unsqueeze(-1);                   // (B, H, m)

    const ops::S4dDiscrete dis = ops::s4d_discretise(log_dt_, log_A_real_, A_imag_, C_);
    const auto &ar = dis.ar, &ai = dis.ai, &cr = dis.cr, &ci = dis.ci;  // dt·A and C̃, each (H, M)
    // Powers λ^l, l = 0..m, each (H, M, m + 1), as the kernel computes them.
    const auto l = torch::arange(m + 1, x.options());
    const auto mag = torch::exp(ar.unsqueeze(-1) * l), ang = ai.unsqueeze(-1) * l;
    const auto pr = mag * torch::cos(ang), pi = mag * torch::sin(ang);

    // The carried state's part: 2·Re(C̃ λ^{l+1} x), l = 0..m-1.
    const auto later_r = pr.narrow(-1, 1, m), later_i = pi.narrow(-1, 1, m);  // λ^{l+1}
    const auto wr = cr.unsqueeze(-1) * later_r - ci.unsqueeze(-1) * later_i;  // C̃ λ^{l+1}: (H, M, m)
    const auto wi = cr.unsqueeze(-1) * later_i + ci.unsqueeze(-1) * later_r;
    y = y + 2 * (torch::einsum("bhn,hnl->bhl", {xr, wr}) - torch::einsum("bhn,hnl->bhl", {xi, wi}));

    // The state after the chunk: λ^m x + Σ_j λ^{m-1-j} u_j.
    const auto back_r = pr.narrow(-1, 0, m).flip(-1), back_i = pi.narrow(-1, 0, m).flip(-1);  // λ^{m-1-j}: (H, M, m)
    const auto last_r = pr.select(-1, m), last_i = pi.select(-1, m);                          // λ^m: (H, M)
    auto nr = last_r * xr - last_i * xi + torch::einsum("bhj,hnj->bhn", {u, back_r});
    auto ni = last_r * xi + last_i * xr + torch::einsum("bhj,hnj->bhn", {u, back_i});
    xr = nr;
    xi = ni;
    state.position += m;
    y = ops::gelu(y).transpose(1, 2);                                              // (B, m, H)
    return torch::glu(cerebra::linear(out_, y), -1);                               // (B, m, d)
  }
  bool has_recurrent_step() const override { return true; }

  double flops(int64_t n) const override {
    return ops::s4d_conv_flops(1, d_, n)                                     // FFT convolution
           + 2.0 * static_cast<double>(n) * static_cast<double>(d_) * 2.0 * static_cast<double>(d_);  // output
  }
  nlohmann::json own_options() const override { return {{"d_state", own_.d_state}}; }
  bool is_causal() const override { return true; }

 private:
  int64_t d_, M_;
  S4dOptions own_;
  torch::nn::Linear out_{nullptr};
  torch::Tensor log_dt_, log_A_real_, A_imag_, C_, D_;
};

MixerRegistration reg(define_mixer<S4dOptions>(
    "s4d", {{"d_state", ValueType::Int, "16", "s4d: state size N per channel (N/2 complex modes)", {}, ""}},
    [](const Config& c) { return S4dOptions{c.get_int("d_state")}; },
    [](const MixerOptions& o, const S4dOptions& own) { return std::make_shared<S4dMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
