// S4D kernel, FFT convolution and the recurrence they equal; see include/cerebra/ops/s4d.h.
#include "cerebra/ops/s4d.h"

#include <torch/fft.h>
#include <torch/torch.h>

#include <vector>

#include "cerebra/core/flop_counter.h"

namespace cerebra::ops {

namespace {

using torch::Tensor;

void check_params(const char* op, const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag,
                  const Tensor& C) {
  TORCH_CHECK(log_dt.dim() == 1, op, ": log_dt must be (H), got ", log_dt.sizes());
  const int64_t H = log_dt.size(0);
  TORCH_CHECK(log_A_real.dim() == 2 && log_A_real.size(0) == H, op, ": log_A_real must be (H, M) with H = ", H,
              ", got ", log_A_real.sizes());
  const int64_t M = log_A_real.size(1);
  TORCH_CHECK(A_imag.sizes() == log_A_real.sizes(), op, ": A_imag must be (H, M) = ", log_A_real.sizes(), ", got ",
              A_imag.sizes());
  TORCH_CHECK(C.dim() == 3 && C.size(0) == H && C.size(1) == M && C.size(2) == 2, op, ": C must be (H, M, 2) = (", H,
              ", ", M, ", 2), got ", C.sizes());
}

}  // namespace

S4dDiscrete s4d_discretise(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C) {
  check_params("s4d_discretise", log_dt, log_A_real, A_imag, C);
  const auto dt = torch::exp(log_dt).unsqueeze(-1);  // (H, 1)
  const auto Ar = -torch::exp(log_A_real), Ai = A_imag;
  const auto ar = dt * Ar, ai = dt * Ai;
  const auto mag = torch::exp(ar);
  const auto p = mag * torch::cos(ai) - 1, q = mag * torch::sin(ai);  // e^{dt·A} - 1
  const auto norm = Ar * Ar + Ai * Ai;
  const auto br = (p * Ar + q * Ai) / norm, bi = (q * Ar - p * Ai) / norm;  // (e^{dt·A} - 1) / A
  const auto Cr = C.select(-1, 0), Ci = C.select(-1, 1);
  return {ar, ai, Cr * br - Ci * bi, Cr * bi + Ci * br};
}

Tensor s4d_kernel(const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag, const Tensor& C, int64_t L) {
  check_params("s4d_kernel", log_dt, log_A_real, A_imag, C);
  TORCH_CHECK(L >= 0, "s4d_kernel: L must be non-negative, got ", L);
  const S4dDiscrete d = s4d_discretise(log_dt, log_A_real, A_imag, C);
  const auto l = torch::arange(L, log_dt.options());                       // (L)
  const auto mag = torch::exp(d.ar.unsqueeze(-1) * l);                     // (H, M, L)
  const auto ang = d.ai.unsqueeze(-1) * l;                                 // (H, M, L)
  // Element-wise products summed over the modes (a parameter transform; see the header on FLOPs).
  return 2 * (mag * (d.cr.unsqueeze(-1) * torch::cos(ang) - d.ci.unsqueeze(-1) * torch::sin(ang))).sum(1);  // (H, L)
}

Tensor causal_conv_fft(const Tensor& u, const Tensor& K) {
  TORCH_CHECK(u.dim() == 3 && K.dim() == 2 && K.size(0) == u.size(1) && K.size(1) == u.size(2),
              "causal_conv_fft: u (B, H, L) and K (H, L) expected, got ", u.sizes(), " and ", K.sizes());
  const int64_t B = u.size(0), H = u.size(1), L = u.size(2);
  if (L == 0) return torch::zeros_like(u);
  const int64_t m = s4d_fft_length(L);
  const auto uf = torch::fft::rfft(u, m);                 // (B, H, m/2 + 1)
  const auto kf = torch::fft::rfft(K, m);                 // (H, m/2 + 1)
  auto y = torch::fft::irfft(uf * kf, m).narrow(-1, 0, L);  // (B, H, L)
  add_kernel_flops("fft_conv", s4d_conv_flops(B, H, L));
  return y;
}

Tensor s4d_ref(const Tensor& u, const Tensor& log_dt, const Tensor& log_A_real, const Tensor& A_imag,
               const Tensor& C) {
  check_params("s4d_ref", log_dt, log_A_real, A_imag, C);
  TORCH_CHECK(u.dim() == 3 && u.size(1) == log_dt.size(0), "s4d_ref: u must be (B, H, L) with H = ", log_dt.size(0),
              ", got ", u.sizes());
  const int64_t B = u.size(0), H = u.size(1), L = u.size(2), M = log_A_real.size(1);
  // Recurrence x_l = e^{dt·A} x_{l-1} + B̄ u_l, y_l = 2 Re(C x_l), with B̄ = (e^{dt·A} - 1)/A folded into C (the
  // state is scaled per mode, the output is the same).
  const S4dDiscrete d = s4d_discretise(log_dt, log_A_real, A_imag, C);
  const auto er = torch::exp(d.ar) * torch::cos(d.ai), ei = torch::exp(d.ar) * torch::sin(d.ai);  // e^{dt·A}
  auto xr = torch::zeros({B, H, M}, u.options()), xi = torch::zeros({B, H, M}, u.options());
  const auto us = u.unbind(2);
  std::vector<Tensor> ys;
  ys.reserve(L);
  for (int64_t l = 0; l < L; ++l) {
    auto nr = er * xr - ei * xi + us[l].unsqueeze(-1);
    auto ni = er * xi + ei * xr;
    xr = nr;
    xi = ni;
    ys.push_back(2 * (d.cr * xr - d.ci * xi).sum(-1));  // (B, H)
  }
  return L > 0 ? torch::stack(ys, 2) : torch::zeros_like(u);
}

}  // namespace cerebra::ops
