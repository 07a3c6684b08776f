// RWKV-4's WKV operator (Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era"), with the semantics of
// BlinkDL's RWKV-LM wkv_cuda.cu: a CPU kernel with its own backward, a reference from plain torch ops, and a
// one-step form for recurrent generation.
//
//   w: (C) decay parameter, applied as wd = -exp(w) < 0;  u: (C) bonus of the current token;  k, v: (B, T, C)
//   -> y: (B, T, C) with, for every (b, c) and t,
//   y_t = (Σ_{i<t} e^{(t-1-i)·wd + k_i} v_i + e^{u + k_t} v_t) / (Σ_{i<t} e^{(t-1-i)·wd + k_i} + e^{u + k_t})
//
// Numerical stability: the sums are kept as (aa, bb) scaled by e^{-pp}, pp a running maximum of the exponents
// (wkv_cuda.cu's trick), so no exponential of a positive number is ever taken: k of any size (|k| in the
// hundreds, where e^k overflows float) gives finite outputs. The backward keeps the adjoint sums scaled the same way.
//
// FLOPs (2 per multiply-add; wkv_flops): per (b, t, c) the forward runs 6 multiply-adds (numerator 2, denominator
// 1, state update 3); exps, maxima and the division are element-wise and not counted: 12·B·T·C. The backward
// recomputes the forward state with the derivative sums and the gradients of w and u (11 multiply-adds) and runs
// the adjoint recurrence (10): 42·B·T·C.
// The kernel reports both to the FLOP counter as "kernel:wkv"; the reference reports its forward as
// "kernel:wkv_ref" (its own ops are element-wise), so a model measures the same FLOPs whichever path runs.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace cerebra::ops {

// Forward FLOPs of one WKV, 12·B·T·C (see above).
inline double wkv_flops(int64_t B, int64_t T, int64_t C) {
  return 12.0 * static_cast<double>(B) * static_cast<double>(T) * static_cast<double>(C);
}

// w, u: (C), k, v: (B, T, C) -> y: (B, T, C). float32 or float64 CPU tensors, all of one dtype; differentiable
// with respect to all four (a hand-written backward). Parallel over B x C with at::parallel_for, sequential over T.
torch::Tensor wkv(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& k, const torch::Tensor& v);

// Same arguments and result from plain torch ops (a loop over T with the same running-maximum trick); autograd
// differentiates it. For tests.
torch::Tensor wkv_ref(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& k, const torch::Tensor& v);

// Recurrent state after some tokens, each (B, C): aa = Σ e^{..+k_i} v_i · e^{-pp}, bb = Σ e^{..+k_i} · e^{-pp}.
struct WkvState {
  torch::Tensor aa, bb, pp;
};

// The state before the first token: aa = bb = 0, pp = -1e38 (an exponent below any real one).
WkvState wkv_initial_state(int64_t B, int64_t C, const torch::TensorOptions& options);

// One token for recurrent generation: w, u: (C), k, v: (B, C), state (B, C) each -> y: (B, C); `state` becomes
// the state after this token. Stepping t = 0..T-1 from wkv_initial_state gives wkv's outputs. Torch ops.
torch::Tensor wkv_step(const torch::Tensor& w, const torch::Tensor& u, const torch::Tensor& k, const torch::Tensor& v,
                       WkvState& state);

}  // namespace cerebra::ops
