// Mamba-2 block (Dao & Gu 2024; mamba_ssm's Mamba2Simple without the fused kernels) as a SequenceMixer ("mamba2").
//
//   x (B, n, d) -> in_proj -> [z (E) | xBC (E + 2N) | dt (H)],  E = expand·d, H = E / head_dim heads of P = head_dim
//   xBC -> causal depthwise conv (kernel d_conv, bias) -> SiLU -> [x (H, P) | B (1, N) | C (1, N)]   (one group)
//   dt = softplus(dt + dt_bias), A = -exp(A_log) (one scalar per head)
//   y = SSD(x, dt, A, B, C) + D ∘ x                       (ops/ssd.h, chunked, chunk_size steps per chunk)
//   y = RMSNorm(y ∘ silu(z)) ∘ norm_weight -> out_proj -> (B, n, d)      (gated RMSNorm, norm after the gate)
// Initialisation as Mamba2Simple: A uniform in [1, 16] (stored as log), dt_bias = softplus⁻¹(dt) with dt
// log-uniform in [1e-3, 1e-1], D = 1, norm weight 1.
//
// Own options (Mamba2Options, config keys of the same names): d_state N (16), expand (2), head_dim P (0 = E /
// n_heads), chunk_size (64), d_conv (4).
// Padding mask: padded tokens enter as zeros (before in_proj), their conv outputs are zeroed and their step size is
// 0, so the state passes through them unchanged: nothing of a padded token reaches a real one, wherever the padding
// is. Causal by construction (left-padded conv, forward recurrence).
// Generation state (step): "conv", the last d_conv - 1 inputs of the convolution (B, E + 2N, d_conv - 1), zeros
// before the first token (the left padding of the full forward), and "ssd", the SSD state per head after the tokens
// seen (B, H, P, N).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include "cerebra/models/mixer.h"
#include "cerebra/models/quant.h"
#include "cerebra/ops/ssd.h"

namespace cerebra {

namespace {

namespace F = torch::nn::functional;

struct Mamba2Options {
  int64_t d_state = 16, expand = 2, head_dim = 0, chunk_size = ops::kSsdChunk, d_conv = 4;  // head_dim 0 = E / n_heads
};

class Mamba2Mixer final : public SequenceMixer {
 public:
  Mamba2Mixer(const MixerOptions& o, const Mamba2Options& own)
      : d_(o.d_model), N_(own.d_state), E_(own.expand * o.d_model), k_(own.d_conv), chunk_(own.chunk_size), own_(own) {
    TORCH_CHECK(d_ > 0 && N_ > 0 && E_ > 0 && k_ > 0 && chunk_ > 0, "mamba2: d_model, d_state, expand, d_conv and ",
                "chunk_size must be positive, got ", d_, ", ", N_, ", ", own.expand, ", ", k_, ", ", chunk_);
    P_ = own.head_dim > 0 ? own.head_dim : (o.n_heads > 0 && E_ % o.n_heads == 0 ? E_ / o.n_heads : 0);
    TORCH_CHECK(P_ > 0 && E_ % P_ == 0, "mamba2: head_dim (", own.head_dim, "; 0 = inner width / n_heads = ", E_, " / ",
                o.n_heads, ") must divide the inner width expand * d_model = ", E_);
    H_ = E_ / P_;
    const int64_t conv_dim = E_ + 2 * N_;
    in_proj_ = register_module("in_proj", torch::nn::Linear(torch::nn::LinearOptions(d_, 2 * E_ + 2 * N_ + H_).bias(false)));
    conv_ = register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(conv_dim, conv_dim, k_).groups(conv_dim)));
    out_proj_ = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(E_, d_).bias(false)));
    torch::NoGradGuard guard;
    A_log_ = register_parameter("A_log", torch::log(torch::empty({H_}).uniform_(1.0, 16.0)));
    auto dt = torch::exp(torch::rand({H_}) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3)).clamp_min(1e-4);
    dt_bias_ = register_parameter("dt_bias", dt + torch::log(-torch::expm1(-dt)));
    D_ = register_parameter("D", torch::ones({H_}));
    norm_weight_ = register_parameter("norm_weight", torch::ones({E_}));
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "mamba2: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    torch::Tensor m;  // (B, n, 1) 0/1 in x's dtype
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "mamba2: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ", mask.sizes());
      m = mask.to(x.scalar_type()).unsqueeze(-1);
    }
    auto zxbcdt = cerebra::linear(in_proj_, m.defined() ? x * m : x);  // (B, n, 2E + 2N + H)
    auto z = zxbcdt.narrow(2, 0, E_);                                  // (B, n, E)
    auto xBC = zxbcdt.narrow(2, E_, E_ + 2 * N_).transpose(1, 2);      // (B, E + 2N, n)
    xBC = torch::silu(conv_->forward(F::pad(xBC, F::PadFuncOptions({k_ - 1, 0})))).transpose(1, 2);  // (B, n, E + 2N)
    if (m.defined()) xBC = xBC * m;
    auto xs = xBC.narrow(2, 0, E_).reshape({B, n, H_, P_});          // (B, n, H, P)
    auto Bm = xBC.narrow(2, E_, N_).unsqueeze(2);                    // (B, n, 1, N)
    auto Cm = xBC.narrow(2, E_ + N_, N_).unsqueeze(2);               // (B, n, 1, N)
    auto dt = torch::softplus(zxbcdt.narrow(2, 2 * E_ + 2 * N_, H_) + dt_bias_);  // (B, n, H)
    if (m.defined()) dt = dt * m;  // step size 0 on padded tokens: the state passes through them unchanged
    auto y = std::get<0>(ops::ssd(xs, dt, -torch::exp(A_log_), Bm, Cm, chunk_));  // (B, n, H, P)
    return output(y, xs, z);
  }

  // x: (B, m, d) -> (B, m, d). The chunk runs through the convolution over the buffered inputs and the chunked SSD
  // from a zero state, as forward(); the state S carried in then adds, the recurrence being linear in its state, with
  // a⁺_l = dt_0·A + .. + dt_l·A per head (the off-diagonal term of ops::ssd's chunked form):
  //   y_l += e^{a⁺_l} S · C_l,   and the state after the chunk gains e^{a⁺_last} S.
  torch::Tensor step(const torch::Tensor& x, MixerState& state) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "mamba2: step: x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1);
    if (m == 0) return torch::zeros_like(x);
    const bool fresh = !state.has("ssd");
    if (fresh) {
      state.tensors["conv"] = torch::zeros({B, E_ + 2 * N_, k_ - 1}, x.options());
      state.tensors["ssd"] = torch::zeros({B, H_, P_, N_}, x.options());
    }
    auto& conv_in = state.tensors.at("conv");
    auto& S = state.tensors.at("ssd");
    TORCH_CHECK(S.size(0) == B, "mamba2: step: the state holds a batch of ", S.size(0), ", x has ", B);
    auto zxbcdt = cerebra::linear(in_proj_, x);                     // (B, m, 2E + 2N + H)
    auto z = zxbcdt.narrow(2, 0, E_);                               // (B, m, E)
    auto in = torch::cat({conv_in, zxbcdt.narrow(2, E_, E_ + 2 * N_).transpose(1, 2)}, 2);  // (B, E + 2N, k-1 + m)
    conv_in = in.narrow(2, m, k_ - 1).clone();
    auto xBC = torch::silu(conv_->forward(in)).transpose(1, 2);     // (B, m, E + 2N)
    auto xs = xBC.narrow(2, 0, E_).reshape({B, m, H_, P_});         // (B, m, H, P)
    auto Bm = xBC.narrow(2, E_, N_).unsqueeze(2);                   // (B, m, 1, N)
    auto Cm = xBC.narrow(2, E_ + N_, N_).unsqueeze(2);              // (B, m, 1, N)
    auto dt = torch::softplus(zxbcdt.narrow(2, 2 * E_ + 2 * N_, H_) + dt_bias_);  // (B, m, H)
    auto A = -torch::exp(A_log_);
    auto [y, last] = ops::ssd(xs, dt, A, Bm, Cm, chunk_);           // (B, m, H, P), (B, H, P, N)
    if (!fresh) {
      // Cumulative decays in float64, as ops::ssd takes them.
      auto decay = torch::exp((dt * A).to(torch::kDouble).cumsum(1)).to(x.scalar_type());  // (B, m, H)
      auto carried = torch::matmul(Cm.squeeze(2), S.reshape({B, H_ * P_, N_}).transpose(1, 2));  // (B, m, H·P)
      y = y + carried.view({B, m, H_, P_}) * decay.unsqueeze(-1);
      last = last + decay.select(1, m - 1).unsqueeze(-1).unsqueeze(-1) * S;
    }
    S = last;
    state.position += m;
    return output(y, xs, z);
  }
  bool has_recurrent_step() const override { return true; }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_), E = static_cast<double>(E_);
    const double S = static_cast<double>(N_), H = static_cast<double>(H_), k = static_cast<double>(k_);
    return 2.0 * N * d * (2.0 * E + 2.0 * S + H)             // in_proj
           + 2.0 * N * (E + 2.0 * S) * k                     // depthwise conv (aten::convolution, groups = E + 2N)
           + ops::ssd_flops(1, n, H_, P_, 1, N_, chunk_)     // SSD, chunked
           + 2.0 * N * E * d;                                // out_proj
  }
  nlohmann::json own_options() const override {
    return {{"d_state", own_.d_state}, {"expand", own_.expand}, {"head_dim", own_.head_dim},
            {"chunk_size", own_.chunk_size}, {"d_conv", own_.d_conv}};
  }
  bool is_causal() const override { return true; }

 private:
  // SSD output y (B, n, H, P), its inputs xs (B, n, H, P) and the gate z (B, n, E) -> (B, n, d): skip D, gate,
  // RMSNorm and the output projection.
  torch::Tensor output(const torch::Tensor& y, const torch::Tensor& xs, const torch::Tensor& z) {
    const int64_t B = y.size(0), n = y.size(1);
    auto g = (y + xs * D_.unsqueeze(-1)).reshape({B, n, E_}) * torch::silu(z);  // (B, n, E)
    g = g * torch::rsqrt(g.pow(2).mean(-1, /*keepdim=*/true) + 1e-5) * norm_weight_;
    return cerebra::linear(out_proj_, g);  // (B, n, d)
  }

  int64_t d_, N_, E_, k_, chunk_, P_ = 0, H_ = 0;
  Mamba2Options own_;
  torch::nn::Linear in_proj_{nullptr}, out_proj_{nullptr};
  torch::nn::Conv1d conv_{nullptr};
  torch::Tensor A_log_, dt_bias_, D_, norm_weight_;
};

MixerRegistration reg(define_mixer<Mamba2Options>(
    "mamba2",
    {{"d_state", ValueType::Int, "16", "mamba2: state size N per head", {}, ""},
     {"expand", ValueType::Int, "2", "mamba2: inner width E = expand * d_model", {}, ""},
     {"head_dim", ValueType::Int, "0", "mamba2: width P of a head, H = E / P heads (0 = E / n_heads)", {}, ""},
     {"chunk_size", ValueType::Int, "64", "mamba2: steps per chunk of the SSD (quadratic inside, recurrent across)",
      {}, ""},
     {"d_conv", ValueType::Int, "4", "mamba2: kernel of the causal depthwise convolution", {}, ""}},
    [](const Config& c) {
      return Mamba2Options{c.get_int("d_state"), c.get_int("expand"), c.get_int("head_dim"), c.get_int("chunk_size"),
                           c.get_int("d_conv")};
    },
    [](const MixerOptions& o, const Mamba2Options& own) { return std::make_shared<Mamba2Mixer>(o, own); }));

}  // namespace
}  // namespace cerebra
