// S4D (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models"): a diagonal
// complex SSM per channel, discretised with zero-order hold, turned into a convolution kernel from its parameters
// and applied by FFT; a sequential reference of the same map for tests.
//
// Per channel h with step dt = exp(log_dt_h) and modes n = 0..M-1 (M = N/2 complex modes, conjugate pairs implied):
//   A_n = -exp(log_A_real[h, n]) + i·A_imag[h, n],  C_n = C[h, n, 0] + i·C[h, n, 1]
//   x_l = e^{dt·A} ∘ x_{l-1} + (e^{dt·A} - 1) / A · u_l,   y_l = 2·Re(Σ_n C_n x_l[n])        (x_{-1} = 0)
// equivalently y = K * u (causal convolution) with K_l = 2·Re(Σ_n C_n (e^{dt·A_n} - 1) / A_n · e^{dt·A_n·l}).
// All in real arithmetic (cos, sin), so the kernel is differentiable without complex autograd.
//
// FLOPs (s4d_conv_flops): the kernel K depends only on the parameters and L (computed once per forward, element-wise
// ops; not counted, like any parameter transform). Per sequence and channel, the FFT convolution runs an rfft and an
// irfft of length m = the smallest power of two ≥ 2L (the conventional 2.5·m·log2(m) FLOPs each for a real
// transform of length m) and m/2 + 1 complex products (8 FLOPs each): H·(5·m·log2(m) + 8·(m/2 + 1)).
// causal_conv_fft reports this as "kernel:fft_conv". (A power of two, not 2L itself: a length with a large
// prime factor, e.g. 2L = 58, takes pocketfft's slower Bluestein path.)
#pragma once

#include <torch/types.h>

#include <cmath>
#include <cstdint>

namespace cerebra::ops {

// FLOPs of causal_conv_fft on (B, H, L) (see above).
// The FFT length of a causal convolution of L steps: the smallest power of two ≥ 2L.
inline int64_t s4d_fft_length(int64_t L) {
  int64_t m = 1;
  while (m < 2 * L) m *= 2;
  return m;
}

inline double s4d_conv_flops(int64_t B, int64_t H, int64_t L) {
  if (L <= 0) return 0.0;
  const double m = static_cast<double>(s4d_fft_length(L));
  return static_cast<double>(B) * static_cast<double>(H) * (5.0 * m * std::log2(m) + 8.0 * (m / 2.0 + 1.0));
}

// The discretised parameters, each (H, M): dt·A = (ar, ai), and C·(e^{dt·A} - 1)/A = (cr, ci) (the B̄ of the
// zero-order hold folded into C). The kernel and the recurrence (a mixer's generation state) are built from them.
struct S4dDiscrete {
  torch::Tensor ar, ai, cr, ci;
};
S4dDiscrete s4d_discretise(const torch::Tensor& log_dt, const torch::Tensor& log_A_real, const torch::Tensor& A_imag,
                           const torch::Tensor& C);

// log_dt: (H), log_A_real, A_imag: (H, M), C: (H, M, 2) -> K: (H, L)
torch::Tensor s4d_kernel(const torch::Tensor& log_dt, const torch::Tensor& log_A_real, const torch::Tensor& A_imag,
                         const torch::Tensor& C, int64_t L);

// u: (B, H, L), K: (H, L) -> y: (B, H, L) with y_l = Σ_{j<=l} K_{l-j} u_j, by FFT of length s4d_fft_length(L).
torch::Tensor causal_conv_fft(const torch::Tensor& u, const torch::Tensor& K);

// The same map as causal_conv_fft(u, s4d_kernel(...)) by the recurrence, one step at a time (torch ops). For tests.
torch::Tensor s4d_ref(const torch::Tensor& u, const torch::Tensor& log_dt, const torch::Tensor& log_A_real,
                      const torch::Tensor& A_imag, const torch::Tensor& C);

}  // namespace cerebra::ops
