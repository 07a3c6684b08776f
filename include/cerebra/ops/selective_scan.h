// Mamba's selective scan (S6), real-valued, with mamba_ssm's selective_scan_fn semantics: a chunked CPU kernel
// and its plain reference, same arguments.
//
//   u: (B, D, L), delta: (B, D, L), A: (D, N), Bm: (B, N, L), Cm: (B, N, L)
//   Dskip: (D) or undefined, z: (B, D, L) or undefined, delta_bias: (D) or undefined
//   -> y: (B, D, L), last_state: (B, D, N)
//
// With dt = delta + delta_bias (then softplus(dt) when delta_softplus), for each (b, d) and l = 0..L-1:
//   x[n] = exp(dt_l · A[d, n]) · x[n] + dt_l · Bm[b, n, l] · u_l        (x starts at 0)
//   y_l  = Σ_n Cm[b, n, l] · x[n] + Dskip[d] · u_l,   then y_l *= silu(z_l)
// last_state is x after step L-1. Both outputs are differentiable with respect to every tensor argument.
//
// FLOPs (2 per multiply-add; selective_scan_flops): per (b, d, l, n) the forward runs dt·A, (dt·u)·B and
// exp(·)·x + (·) for the state (counted as 3 multiply-adds) and C·x for the output (1): 8·B·D·L·N in all; the
// exp and the per-(b, d, l) work (softplus, skip, gate) are element-wise and not counted. The backward recomputes
// the states of each chunk (3 multiply-adds) and runs the adjoint recurrence (9): 24·B·D·L·N.
// The kernel reports both to the FLOP counter as "kernel:selective_scan"; the reference reports its forward as
// "kernel:selective_scan_ref" (its own ops are element-wise, which the counter does not see), so a model measures
// the same FLOPs whichever path runs.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <tuple>

namespace cerebra::ops {

// Steps per chunk: the forward keeps the state at each chunk start, the backward recomputes one chunk's states at
// a time. Memory: B·D·ceil(L / chunk)·N for the chunk states (at most B·D·L when N <= chunk).
constexpr int64_t kSelectiveScanChunk = 64;

// Forward FLOPs of one scan, 8·B·D·L·N (see above).
inline double selective_scan_flops(int64_t B, int64_t D, int64_t L, int64_t N) {
  return 8.0 * static_cast<double>(B) * static_cast<double>(D) * static_cast<double>(L) * static_cast<double>(N);
}

// u: (B, D, L), delta: (B, D, L), A: (D, N), Bm: (B, N, L), Cm: (B, N, L), Dskip: (D)?, z: (B, D, L)?,
// delta_bias: (D)? -> {y: (B, D, L), last_state: (B, D, N)}. float32 or float64 CPU tensors.
std::tuple<torch::Tensor, torch::Tensor> selective_scan(const torch::Tensor& u, const torch::Tensor& delta,
                                                        const torch::Tensor& A, const torch::Tensor& Bm,
                                                        const torch::Tensor& Cm, const torch::Tensor& Dskip,
                                                        const torch::Tensor& z, const torch::Tensor& delta_bias,
                                                        bool delta_softplus, int64_t chunk = kSelectiveScanChunk);

// Same arguments and result from plain torch ops, sequential over L (as mamba_ssm's selective_scan_ref; it
// materialises exp(dt·A) and dt·u·B as (B, D, L, N) tensors).
std::tuple<torch::Tensor, torch::Tensor> selective_scan_ref(const torch::Tensor& u, const torch::Tensor& delta,
                                                            const torch::Tensor& A, const torch::Tensor& Bm,
                                                            const torch::Tensor& Cm, const torch::Tensor& Dskip,
                                                            const torch::Tensor& z, const torch::Tensor& delta_bias,
                                                            bool delta_softplus);

}  // namespace cerebra::ops
