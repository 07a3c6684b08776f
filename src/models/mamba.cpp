// Mamba block (Gu & Dao 2023, mamba_ssm's Mamba "simple" path) as a SequenceMixer ("mamba").
//
//   x (B, n, d) -> in_proj -> [x | z] (B, n, 2E), E = expand·d
//   x -> causal depthwise conv (kernel d_conv) -> SiLU -> x_proj -> [dt (R) | B (N) | C (N)]
//   delta = dt_proj.weight · dt, selective scan with A = -exp(A_log), skip D, gate silu(z) and
//   delta_bias = dt_proj.bias under softplus -> y (B, n, E) -> out_proj -> (B, n, d)
//
// Own options (MambaOptions, config keys of the same names): d_state N (16), expand (2), d_conv (4), dt_rank R
// (0 = ceil(d/16)), scan_impl (kernel = chunked CPU kernel ops::selective_scan, reference = ops::selective_scan_ref).
// Padding mask: padded tokens enter as zeros (before in_proj and before the conv) and get a step size of 0, so the
// state passes through them unchanged: nothing of a padded token reaches a real one, wherever the padding is.
// Causal by construction (left-padded conv, forward scan).
// Generation state (step): "conv", the last d_conv - 1 inputs of the convolution (B, E, d_conv - 1), zeros before the
// first token (the left padding of the full forward), and "ssm", the scan's state x after the tokens seen (B, E, N).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>
#include <nlohmann/json.hpp>

#include "cerebra/models/mixer.h"
#include "cerebra/ops/selective_scan.h"
#include "cerebra/models/quant.h"

namespace cerebra {

namespace {

namespace F = torch::nn::functional;

struct MambaOptions {
  int64_t d_state = 16, expand = 2, d_conv = 4, dt_rank = 0;  // dt_rank 0 = ceil(d_model / 16)
  std::string scan_impl = "kernel";                            // kernel | reference
};

class MambaMixer final : public SequenceMixer {
 public:
  MambaMixer(const MixerOptions& o, const MambaOptions& own)
      : d_(o.d_model),
        N_(own.d_state),
        E_(own.expand * o.d_model),
        k_(own.d_conv),
        R_(own.dt_rank > 0 ? own.dt_rank : static_cast<int64_t>(std::ceil(o.d_model / 16.0))),
        scan_impl_(own.scan_impl == "reference" ? 1 : own.scan_impl == "kernel" ? 0 : -1),
        own_(own) {
    TORCH_CHECK(d_ > 0 && N_ > 0 && E_ > 0 && k_ > 0 && R_ > 0, "mamba: d_model, d_state, expand, d_conv and dt_rank ",
                "must be positive, got ", d_, ", ", N_, ", ", E_ / std::max<int64_t>(d_, 1), ", ", k_, ", ", R_);
    TORCH_CHECK(scan_impl_ >= 0, "mamba: scan_impl must be kernel or reference, got '", own.scan_impl, "'");
    in_proj_ = register_module("in_proj", torch::nn::Linear(torch::nn::LinearOptions(d_, 2 * E_).bias(false)));
    conv_ = register_module("conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(E_, E_, k_).groups(E_)));
    x_proj_ = register_module("x_proj", torch::nn::Linear(torch::nn::LinearOptions(E_, R_ + 2 * N_).bias(false)));
    dt_proj_ = register_module("dt_proj", torch::nn::Linear(R_, E_));
    out_proj_ = register_module("out_proj", torch::nn::Linear(torch::nn::LinearOptions(E_, d_).bias(false)));
    // S4D-real initialisation A[:, n] = -(n + 1), stored as log; skip D = 1.
    A_log_ = register_parameter("A_log", torch::log(torch::arange(1, N_ + 1, torch::kFloat)).repeat({E_, 1}));
    D_ = register_parameter("D", torch::ones({E_}));
    init_dt();
  }

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "mamba: x must be (B, n, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), n = x.size(1);
    torch::Tensor m;  // (B, 1, n) 0/1 in x's dtype
    if (mask.defined()) {
      TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}) && mask.scalar_type() == torch::kBool,
                  "mamba: mask must be bool (B, n) = (", B, ", ", n, "), got ", mask.scalar_type(), " ", mask.sizes());
      m = mask.to(x.scalar_type()).unsqueeze(1);
    }
    auto xz = cerebra::linear(in_proj_, m.defined() ? x * m.transpose(1, 2) : x);  // (B, n, 2E)
    auto u = xz.narrow(2, 0, E_).transpose(1, 2);                          // (B, E, n)
    auto z = xz.narrow(2, E_, E_).transpose(1, 2);                         // (B, E, n)
    if (m.defined()) u = u * m;
    u = torch::silu(conv_->forward(F::pad(u, F::PadFuncOptions({k_ - 1, 0}))));  // causal: (B, E, n)
    if (m.defined()) u = u * m;
    auto x_dbl = cerebra::linear(x_proj_, u.transpose(1, 2));                                      // (B, n, R + 2N)
    auto delta = cerebra::linear(dt_proj_, x_dbl.narrow(2, 0, R_), /*add_bias=*/false).transpose(1, 2);  // (B, E, n)
    auto Bm = x_dbl.narrow(2, R_, N_).transpose(1, 2);                                     // (B, N, n)
    auto Cm = x_dbl.narrow(2, R_ + N_, N_).transpose(1, 2);                                // (B, N, n)
    auto A = -torch::exp(A_log_);                                                          // (E, N)
    torch::Tensor bias = dt_proj_->bias;
    bool softplus = true;
    if (m.defined()) {  // step size 0 on padded tokens: the state passes through them unchanged
      delta = torch::softplus(delta + bias.unsqueeze(-1)) * m;
      bias = torch::Tensor();
      softplus = false;
    }
    auto y = scan_impl_ == 0 ? std::get<0>(ops::selective_scan(u, delta, A, Bm, Cm, D_, z, bias, softplus))
                             : std::get<0>(ops::selective_scan_ref(u, delta, A, Bm, Cm, D_, z, bias, softplus));
    return cerebra::linear(out_proj_, y.transpose(1, 2));  // (B, n, d)
  }

  // x: (B, m, d) -> (B, m, d). A fresh state takes the chunk in one piece, a state that has seen tokens in pieces of
  // at most kSelectiveScanChunk tokens (see step_piece).
  torch::Tensor step(const torch::Tensor& x, MixerState& state) override {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "mamba: step: x must be (B, m, ", d_, "), got ", x.sizes());
    const int64_t B = x.size(0), m = x.size(1);
    if (m == 0) return torch::zeros_like(x);
    const bool fresh = !state.has("ssm");
    if (fresh) {
      state.tensors["conv"] = torch::zeros({B, E_, k_ - 1}, x.options());
      state.tensors["ssm"] = torch::zeros({B, E_, N_}, x.options());
    }
    TORCH_CHECK(state.tensors.at("ssm").size(0) == B, "mamba: step: the state holds a batch of ",
                state.tensors.at("ssm").size(0), ", x has ", B);
    torch::Tensor y;
    if (fresh) {
      y = step_piece(x, state, /*zero_state=*/true);
    } else {
      std::vector<torch::Tensor> ys;
      for (int64_t at = 0; at < m; at += ops::kSelectiveScanChunk)
        ys.push_back(step_piece(x.narrow(1, at, std::min(ops::kSelectiveScanChunk, m - at)), state, false));
      y = ys.size() == 1 ? ys[0] : torch::cat(ys, 1);
    }
    state.position += m;
    return y;
  }
  bool has_recurrent_step() const override { return true; }

  double flops(int64_t n) const override {
    const double N = static_cast<double>(n), d = static_cast<double>(d_), E = static_cast<double>(E_);
    const double R = static_cast<double>(R_), S = static_cast<double>(N_), k = static_cast<double>(k_);
    return 2.0 * N * d * 2.0 * E                      // in_proj
           + 2.0 * N * E * k                          // depthwise conv (aten::convolution, groups = E)
           + 2.0 * N * E * (R + 2.0 * S)              // x_proj
           + 2.0 * N * R * E                          // dt_proj
           + ops::selective_scan_flops(1, E_, n, N_)  // scan, 8·n·E·N
           + 2.0 * N * E * d;                         // out_proj
  }
  nlohmann::json own_options() const override {
    return {{"d_state", own_.d_state}, {"expand", own_.expand}, {"d_conv", own_.d_conv}, {"dt_rank", own_.dt_rank},
            {"scan_impl", own_.scan_impl}};
  }
  bool is_causal() const override { return true; }

 private:
  // dt_proj as in mamba_ssm: weight ~ U(±R^-1/2); bias = softplus⁻¹(dt), dt log-uniform in [1e-3, 1e-1].
  void init_dt() {
    torch::NoGradGuard guard;
    const double std = 1.0 / std::sqrt(static_cast<double>(R_));
    dt_proj_->weight.uniform_(-std, std);
    auto dt = torch::exp(torch::rand({E_}) * (std::log(0.1) - std::log(1e-3)) + std::log(1e-3)).clamp_min(1e-4);
    dt_proj_->bias.copy_(dt + torch::log(-torch::expm1(-dt)));
  }

  // x: (B, m, d) -> (B, m, d), advancing state's "conv" and "ssm" (not its position). The chunk runs through the
  // convolution over the buffered inputs and the scan from a zero state, as forward(); the state h carried in then
  // adds, the recurrence being linear in its state, with S_l = dt_0 + .. + dt_l per channel,
  //   y_l += silu(z_l) · Σ_n Cm_l[n] · e^{A[e, n] · S_l} · h[e, n],
  // and the state after the chunk gains e^{A · S_last} ∘ h (a (B, E, m, N) tensor: the caller bounds m unless h is
  // known to be zero).
  torch::Tensor step_piece(const torch::Tensor& x, MixerState& state, bool zero_state) {
    const int64_t m = x.size(1);
    auto& conv_in = state.tensors.at("conv");
    auto& h = state.tensors.at("ssm");
    auto xz = cerebra::linear(in_proj_, x);         // (B, m, 2E)
    auto u = xz.narrow(2, 0, E_).transpose(1, 2);   // (B, E, m)
    auto z = xz.narrow(2, E_, E_).transpose(1, 2);  // (B, E, m)
    auto in = torch::cat({conv_in, u}, 2);          // (B, E, k-1 + m): the k-1 inputs before the chunk, then the chunk
    conv_in = in.narrow(2, m, k_ - 1).clone();
    u = torch::silu(conv_->forward(in));                                                          // (B, E, m)
    auto x_dbl = cerebra::linear(x_proj_, u.transpose(1, 2));                                      // (B, m, R + 2N)
    auto delta = cerebra::linear(dt_proj_, x_dbl.narrow(2, 0, R_), /*add_bias=*/false).transpose(1, 2);  // (B, E, m)
    auto dt = torch::softplus(delta + dt_proj_->bias.unsqueeze(-1));                       // (B, E, m), as the scan's
    auto Bm = x_dbl.narrow(2, R_, N_).transpose(1, 2);                                     // (B, N, m)
    auto Cm = x_dbl.narrow(2, R_ + N_, N_).transpose(1, 2);                                // (B, N, m)
    auto A = -torch::exp(A_log_);                                                          // (E, N)
    auto [y, last] = scan_impl_ == 0
                         ? ops::selective_scan(u, dt, A, Bm, Cm, D_, z, torch::Tensor(), false)
                         : ops::selective_scan_ref(u, dt, A, Bm, Cm, D_, z, torch::Tensor(), false);
    if (!zero_state) {
      // e^{A · S_l}: cumulative step sizes in float64, so long chunks do not lose the small exponents.
      auto S = dt.to(torch::kDouble).cumsum(-1);                                                    // (B, E, m)
      auto decay = torch::exp(S.unsqueeze(-1) * A.to(torch::kDouble).unsqueeze(1)).to(x.scalar_type());  // (B, E, m, N)
      y = y + torch::silu(z) * (decay * h.unsqueeze(2) * Cm.transpose(1, 2).unsqueeze(1)).sum(-1);
      last = last + decay.select(2, m - 1) * h;
    }
    h = last;
    return cerebra::linear(out_proj_, y.transpose(1, 2));  // (B, m, d)
  }

  int64_t d_, N_, E_, k_, R_;
  int scan_impl_;
  MambaOptions own_;
  torch::nn::Linear in_proj_{nullptr}, x_proj_{nullptr}, dt_proj_{nullptr}, out_proj_{nullptr};
  torch::nn::Conv1d conv_{nullptr};
  torch::Tensor A_log_, D_;
};

MixerRegistration reg(define_mixer<MambaOptions>(
    "mamba",
    {{"d_state", ValueType::Int, "16", "mamba: state size N per channel", {}, ""},
     {"expand", ValueType::Int, "2", "mamba: inner width E = expand * d_model", {}, ""},
     {"d_conv", ValueType::Int, "4", "mamba: kernel of the causal depthwise convolution", {}, ""},
     {"dt_rank", ValueType::Int, "0", "mamba: rank R of the step-size projection (0 = ceil(d_model / 16))", {}, ""},
     {"scan_impl", ValueType::String, "kernel", "mamba: selective scan: the chunked CPU kernel or the torch-ops "
      "reference", {"kernel", "reference"}, ""}},
    [](const Config& c) {
      return MambaOptions{c.get_int("d_state"), c.get_int("expand"), c.get_int("d_conv"), c.get_int("dt_rank"),
                          c.get_string("scan_impl")};
    },
    [](const MixerOptions& o, const MambaOptions& own) { return std::make_shared<MambaMixer>(o, own); }));

}  // namespace
}  // namespace cerebra
