// Mamba-2 SSD, chunked, in torch ops; see include/cerebra/ops/ssd.h.
//
// Layout inside ssd(): chunks are (B, nc, ·, Q, ·) so that every GEMM is a batched matmul over (B, nc, group or
// head) of Q x N, Q x Q, Q x P matrices. Heads sharing a group are folded into one GEMM where the group's B or C
// is the shared operand (steps 2 and 4 multiply a (R·P x Q) or (Q x N) block by the group's matrix, R = H / G).
#include "cerebra/ops/ssd.h"

#include <torch/torch.h>

#include <vector>

#include "cerebra/core/flop_counter.h"

namespace cerebra::ops {

namespace {

using torch::Tensor;

void check_inputs(const char* op, const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                  const Tensor& Cm) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be (B, T, H, P), got ", x.sizes());
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2);
  TORCH_CHECK(dt.dim() == 3 && dt.size(0) == B && dt.size(1) == T && dt.size(2) == H, op, ": dt must be (B, T, H) = (",
              B, ", ", T, ", ", H, "), got ", dt.sizes());
  TORCH_CHECK(A.dim() == 1 && A.size(0) == H, op, ": A must be (H) = (", H, "), got ", A.sizes());
  TORCH_CHECK(Bm.dim() == 4 && Bm.size(0) == B && Bm.size(1) == T, op, ": Bm must be (B, T, G, N) with (B, T) = (", B,
              ", ", T, "), got ", Bm.sizes());
  TORCH_CHECK(Cm.sizes() == Bm.sizes(), op, ": Cm must be (B, T, G, N) = ", Bm.sizes(), " like Bm, got ", Cm.sizes());
  TORCH_CHECK(Bm.size(2) > 0 && H % Bm.size(2) == 0, op, ": the number of groups G = ", Bm.size(2),
              " must divide the number of heads H = ", H);
  TORCH_CHECK(x.is_floating_point(), op, ": floating tensors expected, got ", x.scalar_type());
  for (const Tensor* t : {&dt, &A, &Bm, &Cm})
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), op, ": every tensor must have x's dtype ", x.scalar_type(),
                ", got ", t->scalar_type());
}

// acs: (..., Q) cumulative sums of a = dt·A <= 0 inside each chunk -> (..., Q, Q) in `dtype` with
// [l, s] = e^{acs_l - acs_s} for s <= l and 1 above the diagonal (the caller masks those): differences of the
// cumulative sums (one broadcast subtraction, as mamba_ssm's chunked Triton kernels), clamped at 0, which only the
// entries above the diagonal reach (the cumulative sum of a <= 0 does not increase). acs is float64 (see ssd()), so
// the difference does not lose the digits that |acs_l| >> |acs_l - acs_s| would cost in float32.
Tensor segment_decay(const Tensor& acs, torch::Dtype dtype) {
  return torch::exp((acs.unsqueeze(-1) - acs.unsqueeze(-2)).clamp_max(0).to(dtype));
}

}  // namespace

std::tuple<Tensor, Tensor> ssd(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                               int64_t chunk_size) {
  check_inputs("ssd", x, dt, A, Bm, Cm);
  TORCH_CHECK(chunk_size > 0, "ssd: chunk_size must be positive, got ", chunk_size);
  const int64_t Bz = x.size(0), T = x.size(1), H = x.size(2), P = x.size(3), G = Bm.size(2), N = Bm.size(3);
  const int64_t R = H / G;
  if (T == 0) return {torch::zeros_like(x), torch::zeros({Bz, H, P, N}, x.options())};
  const int64_t Q = std::min(chunk_size, T), nc = (T + Q - 1) / Q, L = nc * Q;

  auto xdt = x * dt.unsqueeze(-1);  // (B, T, H, P)
  auto a = dt * A;                  // (B, T, H)
  Tensor Bp = Bm, Cp = Cm;
  if (L > T) {  // zero steps at the end: decay 1, no input
    xdt = torch::constant_pad_nd(xdt, {0, 0, 0, 0, 0, L - T});
    a = torch::constant_pad_nd(a, {0, 0, 0, L - T});
    Bp = torch::constant_pad_nd(Bm, {0, 0, 0, 0, 0, L - T});
    Cp = torch::constant_pad_nd(Cm, {0, 0, 0, 0, 0, L - T});
  }
  auto xc = xdt.view({Bz, nc, Q, H, P}).permute({0, 1, 3, 2, 4});  // (B, nc, H, Q, P)
  auto ac = a.view({Bz, nc, Q, H}).permute({0, 1, 3, 2});          // (B, nc, H, Q)
  auto Bc = Bp.reshape({Bz, nc, Q, G, N}).permute({0, 1, 3, 2, 4});  // (B, nc, G, Q, N)
  auto Cc = Cp.reshape({Bz, nc, Q, G, N}).permute({0, 1, 3, 2, 4});  // (B, nc, G, Q, N)
  // Cumulative decays in float64 whatever x's dtype: with strong decays |acs| reaches thousands inside a chunk, and
  // float32 differences of such sums would lose the small exponents near the diagonal.
  const auto dtype = x.scalar_type();
  auto acs = ac.to(torch::kDouble).cumsum(-1);                     // (B, nc, H, Q), float64

  // 1. Diagonal blocks: (C Bᵀ ∘ causal mask ∘ decay) x.
  auto decay = segment_decay(acs, dtype);                                                   // (B, nc, H, Q, Q)
  auto causal = torch::ones({Q, Q}, x.options()).tril();                               // [l, s]: s <= l
  auto CB = torch::matmul(Cc, Bc.transpose(-1, -2)) * causal;                          // (B, nc, G, Q, Q)
  auto M = (CB.unsqueeze(3) * decay.view({Bz, nc, G, R, Q, Q})).view({Bz, nc, H, Q, Q});
  auto y = torch::matmul(M, xc);                                                       // (B, nc, H, Q, P)

  // 2. The state each chunk adds: Σ_s e^{a⁺_last - a⁺_s} x_s ⊗ B_s.
  auto decay_states = torch::exp((acs.narrow(-1, Q - 1, 1) - acs).to(dtype));          // (B, nc, H, Q)
  auto xw = (xc * decay_states.unsqueeze(-1)).transpose(-1, -2).reshape({Bz, nc, G, R * P, Q});
  auto states = torch::matmul(xw, Bc).view({Bz, nc, H, P, N});                          // (B, nc, H, P, N)

  // 3. Across chunks: the state entering chunk c = 1..nc-1 (chunk 0 starts from zero), and the final state.
  const auto chunk_decay = torch::exp(acs.select(-1, Q - 1).to(dtype)).unbind(1);  // nc x (B, H)
  const auto added = states.unbind(1);                                              // nc x (B, H, P, N)
  Tensor h = added[0];
  std::vector<Tensor> h_in;
  h_in.reserve(nc - 1);
  for (int64_t c = 1; c < nc; ++c) {
    h_in.push_back(h);
    h = chunk_decay[c].unsqueeze(-1).unsqueeze(-1) * h + added[c];
  }
  add_kernel_flops("ssd_state_passing", 2.0 * Bz * (nc - 1) * H * P * N);

  // 4. Off-diagonal blocks of chunks 1..nc-1: e^{a⁺_l} C_l · state entering the chunk.
  if (nc > 1) {
    auto hin = torch::stack(h_in, 1).view({Bz, nc - 1, G, R * P, N});                       // (B, nc-1, G, R·P, N)
    auto yoff = torch::matmul(Cc.narrow(1, 1, nc - 1), hin.transpose(-1, -2));              // (B, nc-1, G, Q, R·P)
    yoff = yoff.view({Bz, nc - 1, G, Q, R, P}).permute({0, 1, 2, 4, 3, 5}).reshape({Bz, nc - 1, H, Q, P});
    yoff = yoff * torch::exp(acs.narrow(1, 1, nc - 1).to(dtype)).unsqueeze(-1);
    y = torch::cat({y.narrow(1, 0, 1), y.narrow(1, 1, nc - 1) + yoff}, 1);                 // (B, nc, H, Q, P)
  }
  y = y.permute({0, 1, 3, 2, 4}).reshape({Bz, L, H, P});
  return {L > T ? y.narrow(1, 0, T) : y, h};
}

std::tuple<Tensor, Tensor> ssd_ref(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm,
                                   const Tensor& Cm) {
  check_inputs("ssd_ref", x, dt, A, Bm, Cm);
  const int64_t Bz = x.size(0), T = x.size(1), H = x.size(2), P = x.size(3), N = Bm.size(3);
  const int64_t R = H / Bm.size(2);
  // unbind, not select: one backward node for all steps.
  const auto decay = torch::exp(dt * A).unbind(1);                 // T x (B, H)
  const auto xdt = (x * dt.unsqueeze(-1)).unbind(1);               // T x (B, H, P)
  const auto Bh = Bm.repeat_interleave(R, 2).unbind(1);            // T x (B, H, N)
  const auto Ch = Cm.repeat_interleave(R, 2).unbind(1);            // T x (B, H, N)
  auto h = torch::zeros({Bz, H, P, N}, x.options());
  std::vector<Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) {
    h = decay[t].unsqueeze(-1).unsqueeze(-1) * h + xdt[t].unsqueeze(-1) * Bh[t].unsqueeze(2);
    ys.push_back((h * Ch[t].unsqueeze(2)).sum(-1));  // (B, H, P)
  }
  return {T > 0 ? torch::stack(ys, 1) : torch::zeros_like(x), h};
}

Tensor ssd_step(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                Tensor& state) {
  TORCH_CHECK(x.dim() == 3 && dt.dim() == 2 && Bm.dim() == 3 && Cm.sizes() == Bm.sizes(),
              "ssd_step: x (B, H, P), dt (B, H), Bm and Cm (B, G, N) expected, got ", x.sizes(), ", ", dt.sizes(),
              ", ", Bm.sizes(), ", ", Cm.sizes());
  const int64_t H = x.size(1), G = Bm.size(1);
  TORCH_CHECK(G > 0 && H % G == 0, "ssd_step: G = ", G, " must divide H = ", H);
  TORCH_CHECK(state.dim() == 4 && state.size(0) == x.size(0) && state.size(1) == H && state.size(2) == x.size(2) &&
                  state.size(3) == Bm.size(2),
              "ssd_step: state must be (B, H, P, N), got ", state.sizes());
  auto Bh = Bm.repeat_interleave(H / G, 1), Ch = Cm.repeat_interleave(H / G, 1);  // (B, H, N)
  state = torch::exp(dt * A).unsqueeze(-1).unsqueeze(-1) * state + (x * dt.unsqueeze(-1)).unsqueeze(-1) * Bh.unsqueeze(2);
  return (state * Ch.unsqueeze(2)).sum(-1);
}

}  // namespace cerebra::ops
