// Mamba-2's SSD (state space duality; Dao & Gu 2024, "Transformers are SSMs"), with the semantics of mamba_ssm's
// ssd_minimal_discrete / mamba_chunk_scan_combined (without D, z and dt bias, which the caller applies): the
// chunked algorithm in torch ops built on GEMMs (autograd differentiates it), a sequential reference, and a
// one-step form for recurrent generation.
//
//   x: (B, T, H, P), dt: (B, T, H) step sizes (>= 0), A: (H) one scalar per head (< 0),
//   Bm, Cm: (B, T, G, N) with G dividing H (head h reads group h / (H / G))
//   -> y: (B, T, H, P), final state: (B, H, P, N)
// For every (b, h), from h_{-1} = 0:
//   state_t = exp(dt_t · A_h) · state_{t-1} + dt_t · x_t ⊗ B_t        (P x N)
//   y_t     = state_t · C_t                                            (P)
//
// Chunked form, Q = min(chunk_size, T) steps per chunk (T padded with zero steps to nc·Q): with a = dt·A and its
// cumulative sum a⁺ inside each chunk,
//   1. diagonal blocks:  y_l = Σ_{s<=l} (C_l · B_s) e^{a⁺_l - a⁺_s} dt_s x_s    (C·Bᵀ and the product with x: GEMMs)
//   2. chunk states:     S_c = Σ_s e^{a⁺_last - a⁺_s} dt_s x_s ⊗ B_s           (GEMM)
//   3. across chunks:    state_c = e^{a⁺_last(c-1)} state_{c-1} + S_{c-1}         (sequential over chunks)
//   4. off-diagonal:     y_l += e^{a⁺_l} C_l · state_c, chunks c >= 1 (state_0 = 0) (GEMM)
// The decays of step 1 are e^{a⁺_l - a⁺_s} from differences of the cumulative sums (as mamba_ssm's Triton kernels),
// which are taken in float64 for any input dtype.
//
// FLOPs (2 per multiply-add; ssd_flops): the GEMMs of steps 1, 2 and 4 (counted by the FLOP counter as the bmm
// they run) and the state passing of step 3 (element-wise multiply-adds, reported as "kernel:ssd_state_passing"):
//   2·B·(nc·(G·Q²·N + H·Q²·P + H·Q·P·N) + (nc - 1)·(H·Q·P·N + H·P·N)).
#pragma once

#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

namespace cerebra::ops {

constexpr int64_t kSsdChunk = 64;

// Forward FLOPs of ssd() on (B, T, H, P) with G groups of state size N (see above).
inline double ssd_flops(int64_t B, int64_t T, int64_t H, int64_t P, int64_t G, int64_t N,
                        int64_t chunk_size = kSsdChunk) {
  if (T <= 0) return 0.0;
  const int64_t Q = std::min(chunk_size, T), nc = (T + Q - 1) / Q;
  const double q = static_cast<double>(Q), h = static_cast<double>(H), p = static_cast<double>(P);
  const double g = static_cast<double>(G), n = static_cast<double>(N);
  const double chunks = static_cast<double>(nc);
  return 2.0 * static_cast<double>(B) *
         (chunks * (g * q * q * n + h * q * q * p + h * q * p * n) + (chunks - 1.0) * (h * q * p * n + h * p * n));
}

// x: (B, T, H, P), dt: (B, T, H), A: (H), Bm, Cm: (B, T, G, N) -> {y: (B, T, H, P), final state: (B, H, P, N)}.
// Floating CPU tensors of one dtype; differentiable (autograd) with respect to all five.
std::tuple<torch::Tensor, torch::Tensor> ssd(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                                             const torch::Tensor& Bm, const torch::Tensor& Cm,
                                             int64_t chunk_size = kSsdChunk);

// Same arguments and result by the plain recurrence, one step at a time (torch ops). For tests.
std::tuple<torch::Tensor, torch::Tensor> ssd_ref(const torch::Tensor& x, const torch::Tensor& dt,
                                                 const torch::Tensor& A, const torch::Tensor& Bm,
                                                 const torch::Tensor& Cm);

// One step for recurrent generation: x: (B, H, P), dt: (B, H), A: (H), Bm, Cm: (B, G, N), state: (B, H, P, N)
// (zeros before the first step) -> y: (B, H, P); `state` becomes the state after this step.
torch::Tensor ssd_step(const torch::Tensor& x, const torch::Tensor& dt, const torch::Tensor& A,
                       const torch::Tensor& Bm, const torch::Tensor& Cm, torch::Tensor& state);

}  // namespace cerebra::ops
