// Sliding-window attention in blocks beside its reference; see include/cerebra/ops/banded_attention.h.
//
// A lane is one (batch·head, residue class r of the dilation d): the rows r, r + d, r + 2d, ... of q, k, v, out
// and their gradients, read in place with row stride d·dh. Within a lane, row i attends to the keys
// [i - wl, i + wr] ∩ [0, len) that are not padded: a dilation-1 band. Lanes are independent.
//
// Forward, one work item per (lane, query block of br rows), parallel with at::parallel_for:
//   the block's keys are [r0 - wl, r0 + nr + wr) ∩ [0, len); for each key tile of bc columns in that range, the rows
//   whose band reaches it compute S = scale·Q K_cᵀ (BLAS) -> band and padding masks -> online softmax (running row
//   max m and sum l, rescaling the output row when m grows) -> O += P V_c (BLAS). At the end O /= l and
//   lse = m + log l are kept for the backward (O(n) memory).
// Backward, one work item per (lane, group of consecutive query blocks): D = rowsum(dO ∘ O); for each query block
//   and key tile as in the forward: recompute P = exp(S - lse) on the band, dV_c += Pᵀ dO, dP = dO V_cᵀ,
//   dS = P ∘ (dP - D), dK_c += scale·dSᵀ Q, dQ += scale·dS K_c. dQ rows belong to one block. A key receives dK, dV
//   from the neighbouring blocks too, so each group accumulates into its own dK, dV copy (one group, and no copy,
//   when there are at least as many lanes as threads). No atomics, no races.
#include "cerebra/ops/banded_attention.h"

#include <ATen/record_function.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "blas.h"
#include "cerebra/core/flop_counter.h"
#include "simd.h"
#include "softmax_rows.h"

namespace cerebra::ops {

namespace {

using simd::Pack;
using namespace rows;
using torch::Tensor;

// ---------------------------------------------------------------------------------------------------------------
// Problem description shared by the forward and backward blocks.

template <typename T>
struct Band {
  const T* q;        // (BH, n, dh)
  const T* k;        // (BH, n, dh)
  const T* v;        // (BH, n, dh)
  const bool* mask;  // (B, n), true = real key; nullptr = all real
  int64_t H, n, dh;
  int64_t wl, wr, dil;  // windows clamped to n, dilation clamped to max(n, 1): same band, no overflow
  int64_t br, bc;       // query rows per block x key columns per tile
  T scale;

  int64_t classes() const { return std::min(dil, n); }              // residue classes holding at least one row
  int64_t len(int64_t r) const { return (n - r + dil - 1) / dil; }  // rows of residue class r < classes()
  int64_t blocks(int64_t r) const { return (len(r) + br - 1) / br; }
  int64_t row0(int64_t bh, int64_t r) const { return bh * n + r; }  // first row of the lane in (BH * n) rows
};

// One lane, read in place: row i of the lane is row r + i·d of its (batch·head).
template <typename T>
struct Lane {
  const T* Q;        // (len, dh), row stride ld
  const T* K;        // (len, dh), row stride ld
  const T* V;        // (len, dh), row stride ld
  const bool* mask;  // (len), stride rs; nullptr = all real
  int64_t len, ld, rs;
};

template <typename T>
Lane<T> lane_of(const Band<T>& a, int64_t bh, int64_t r) {
  const int64_t off = a.row0(bh, r) * a.dh;
  const bool* mask = a.mask ? a.mask + (bh / a.H) * a.n + r : nullptr;
  return Lane<T>{a.q + off, a.k + off, a.v + off, mask, a.len(r), a.dil * a.dh, a.dil};
}

// Keys of the query block [r0, r0 + nr): [kb, ke). Rows of the block whose band reaches the key tile
// [c0, c0 + nc): [ra, rb). Columns of the tile in row i's band: [lo, hi).
struct BlockKeys {
  int64_t kb, ke;
};
template <typename T>
BlockKeys block_keys(const Band<T>& a, int64_t len, int64_t r0, int64_t nr) {
  return {std::max<int64_t>(0, r0 - a.wl), std::min(len, r0 + nr + a.wr)};
}
template <typename T>
std::pair<int64_t, int64_t> tile_rows(const Band<T>& a, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
  return {std::max(r0, c0 - a.wr), std::min(r0 + nr, c0 + nc + a.wl)};
}
template <typename T>
std::pair<int64_t, int64_t> row_band(const Band<T>& a, int64_t i, int64_t c0, int64_t nc) {
  return {std::clamp<int64_t>(i - a.wl - c0, 0, nc), std::clamp<int64_t>(i + a.wr + 1 - c0, 0, nc)};
}

// ---------------------------------------------------------------------------------------------------------------
// Forward: one query block [r0, r0 + nr) of a lane. O (the lane's output rows, stride x.ld) starts zeroed;
// lse holds the lane's rows at stride x.rs. Scratch: S (br x bc), m, l (br), bias (bc).

template <typename T, int W>
CEREBRA_INLINE void forward_block(const Band<T>& a, const Lane<T>& x, int64_t r0, T* O, T* lse, T* S, T* m, T* l,
                                  T* bias, double& flops) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t dh = a.dh, ld = x.ld, nr = std::min(a.br, x.len - r0);
  const auto [kb, ke] = block_keys(a, x.len, r0, nr);
  fill(m, nr, kNegInf);
  fill(l, nr, T(0));
  for (int64_t c0 = kb; c0 < ke; c0 += a.bc) {
    const int64_t nc = std::min(a.bc, ke - c0);
    const auto [some_padded, all_padded] = key_bias(x.mask, x.rs, c0, nc, bias);
    if (all_padded) continue;
    const auto [ra, rb] = tile_rows(a, r0, nr, c0, nc);
    if (ra >= rb) continue;
    const int64_t rows = rb - ra;
    blas::gemm(false, true, rows, nc, dh, a.scale, x.Q + ra * ld, ld, x.K + c0 * ld, ld, T(0), S, nc);
    for (int64_t i = ra; i < rb; ++i) {
      T* s = S + (i - ra) * nc;
      const auto [lo, hi] = row_band(a, i, c0, nc);
      if (some_padded) row_add<T, W>(s + lo, bias + lo, hi - lo);
      const T m_old = m[i - r0];
      const T m_new = std::max(m_old, row_max<T, W>(s + lo, hi - lo));
      if (m_new == kNegInf) {  // nothing attended yet
        fill(s, nc, T(0));
        continue;
      }
      const T alpha = std::exp(m_old - m_new);  // 0 when m_old = -inf
      const T sum = row_exp<T, W>(s + lo, hi - lo, m_new);
      fill(s, lo, T(0));
      fill(s + hi, nc - hi, T(0));
      if (alpha != T(1)) row_scale<T, W>(O + i * ld, dh, alpha);
      l[i - r0] = l[i - r0] * alpha + sum;
      m[i - r0] = m_new;
    }
    blas::gemm(false, false, rows, dh, nc, T(1), S, nc, x.V + c0 * ld, ld, T(1), O + ra * ld, ld);
    flops += 4.0 * rows * nc * dh;
  }
  for (int64_t i = r0; i < r0 + nr; ++i) {
    if (l[i - r0] > T(0)) {
      row_scale<T, W>(O + i * ld, dh, T(1) / l[i - r0]);
      lse[i * x.rs] = m[i - r0] + std::log(l[i - r0]);
    } else {
      lse[i * x.rs] = kNegInf;  // no key: the row stays zero
    }
  }
}

// Work item t -> (lane = batch·head·classes + residue, query block).
template <typename T, int W>
CEREBRA_INLINE void forward_items(const Band<T>& a, int64_t begin, int64_t end, T* out, T* lse, double* flops) {
  std::vector<T> work(a.br * a.bc + 2 * a.br + a.bc);
  T *S = work.data(), *m = S + a.br * a.bc, *l = m + a.br, *bias = l + a.br;
  const int64_t blocks = a.blocks(0), classes = a.classes();
  for (int64_t t = begin; t < end; ++t) {
    const int64_t lane = t / blocks, r0 = (t % blocks) * a.br, bh = lane / classes, r = lane % classes;
    const Lane<T> x = lane_of(a, bh, r);
    if (r0 >= x.len) continue;
    const int64_t row0 = a.row0(bh, r);
    forward_block<T, W>(a, x, r0, out + row0 * a.dh, lse + row0, S, m, l, bias, flops[t]);
  }
}

CEREBRA_TARGET_AVX2 void forward_items_avx2(const Band<float>& a, int64_t begin, int64_t end, float* out, float* lse,
                                            double* flops) {
  forward_items<float, simd::lanes<float>(true)>(a, begin, end, out, lse, flops);
}

template <typename T>
void forward_items_any(const Band<T>& a, int64_t begin, int64_t end, T* out, T* lse, double* flops) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return forward_items_avx2(a, begin, end, out, lse, flops);
  }
  forward_items<T, simd::lanes<T>(false)>(a, begin, end, out, lse, flops);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward: one (lane, group of consecutive query blocks). dq rows of those blocks are written by this item only;
// dk, dv are the group's own accumulators. Scratch: S, dP (br x bc), bias (bc).

template <typename T>
struct BandGrad {
  const T* dout;  // (BH, n, dh)
  const T* lse;   // (BH, n)
  const T* D;     // (BH, n): rowsum(dout ∘ out)
  T* dq;          // (BH, n, dh)
  T* dk;          // (groups, BH, n, dh)
  T* dv;          // (groups, BH, n, dh)
  int64_t BH, groups;
};

// The lane's rows of the gradient tensors (row i at stride x.ld, or x.rs for lse and D).
template <typename T>
struct LaneGrad {
  const T *dO, *L, *D;
  T *dQ, *dK, *dV;
};

template <typename T, int W>
CEREBRA_INLINE void backward_block(const Band<T>& a, const Lane<T>& x, const LaneGrad<T>& g, int64_t r0, T* S, T* dP,
                                   T* bias, double& flops) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t dh = a.dh, ld = x.ld, nr = std::min(a.br, x.len - r0);
  const auto [kb, ke] = block_keys(a, x.len, r0, nr);
  for (int64_t c0 = kb; c0 < ke; c0 += a.bc) {
    const int64_t nc = std::min(a.bc, ke - c0);
    const auto [some_padded, all_padded] = key_bias(x.mask, x.rs, c0, nc, bias);
    if (all_padded) continue;
    const auto [ra, rb] = tile_rows(a, r0, nr, c0, nc);
    if (ra >= rb) continue;
    const int64_t rows = rb - ra;
    const T* Qa = x.Q + ra * ld;
    const T* dOa = g.dO + ra * ld;
    const T* Kc = x.K + c0 * ld;
    const T* Vc = x.V + c0 * ld;
    blas::gemm(false, true, rows, nc, dh, a.scale, Qa, ld, Kc, ld, T(0), S, nc);  // S = s Q Kᵀ
    for (int64_t i = ra; i < rb; ++i) {                                           // S -> P, 0 off the band
      T* s = S + (i - ra) * nc;
      const T lse_i = g.L[i * x.rs];
      if (lse_i == kNegInf) {
        fill(s, nc, T(0));
        continue;
      }
      const auto [lo, hi] = row_band(a, i, c0, nc);
      if (some_padded) row_add<T, W>(s + lo, bias + lo, hi - lo);
      row_exp<T, W>(s + lo, hi - lo, lse_i);
      fill(s, lo, T(0));
      fill(s + hi, nc - hi, T(0));
    }
    blas::gemm(true, false, nc, dh, rows, T(1), S, nc, dOa, ld, T(1), g.dV + c0 * ld, ld);  // dV_c += Pᵀ dO
    blas::gemm(false, true, rows, nc, dh, T(1), dOa, ld, Vc, ld, T(0), dP, nc);             // dP = dO V_cᵀ
    for (int64_t i = ra; i < rb; ++i) {                                                     // S -> dS on the band
      const T lse_i = g.L[i * x.rs];
      if (lse_i == kNegInf) continue;
      const auto [lo, hi] = row_band(a, i, c0, nc);
      row_dsoftmax<T, W>(S + (i - ra) * nc + lo, dP + (i - ra) * nc + lo, hi - lo, g.D[i * x.rs]);
    }
    blas::gemm(true, false, nc, dh, rows, a.scale, S, nc, Qa, ld, T(1), g.dK + c0 * ld, ld);   // dK_c += s dSᵀ Q
    blas::gemm(false, false, rows, dh, nc, a.scale, S, nc, Kc, ld, T(1), g.dQ + ra * ld, ld);  // dQ += s dS K_c
    flops += 10.0 * rows * nc * dh;
  }
}

// Work item t -> (lane, group): the group's query blocks are [group·blocks/groups, (group+1)·blocks/groups).
template <typename T, int W>
CEREBRA_INLINE void backward_items(const Band<T>& a, const BandGrad<T>& g, int64_t begin, int64_t end, double* flops) {
  std::vector<T> work(2 * a.br * a.bc + a.bc);
  T *S = work.data(), *dP = S + a.br * a.bc, *bias = dP + a.br * a.bc;
  const int64_t classes = a.classes();
  for (int64_t t = begin; t < end; ++t) {
    const int64_t lane = t / g.groups, group = t % g.groups, bh = lane / classes, r = lane % classes;
    const Lane<T> x = lane_of(a, bh, r);
    const int64_t row0 = a.row0(bh, r), off = row0 * a.dh, copy = group * g.BH * a.n * a.dh;
    const LaneGrad<T> lg{g.dout + off, g.lse + row0, g.D + row0, g.dq + off, g.dk + copy + off, g.dv + copy + off};
    const int64_t blocks = a.blocks(r);
    for (int64_t b = group * blocks / g.groups; b < (group + 1) * blocks / g.groups; ++b)
      backward_block<T, W>(a, x, lg, b * a.br, S, dP, bias, flops[t]);
  }
}

CEREBRA_TARGET_AVX2 void backward_items_avx2(const Band<float>& a, const BandGrad<float>& g, int64_t begin, int64_t end,
                                             double* flops) {
  backward_items<float, simd::lanes<float>(true)>(a, g, begin, end, flops);
}

template <typename T>
void backward_items_any(const Band<T>& a, const BandGrad<T>& g, int64_t begin, int64_t end, double* flops) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return backward_items_avx2(a, g, begin, end, flops);
  }
  backward_items<T, simd::lanes<T>(false)>(a, g, begin, end, flops);
}

// ---------------------------------------------------------------------------------------------------------------
// Drivers on tensors (contiguous q, k, v; mask bool contiguous or undefined).

struct Window {
  int64_t left, right, dilation;
};

template <typename T>
Band<T> describe(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const Window& w, double scale,
                 const BandedTiling& tiling) {
  const int64_t n = q.size(2);
  return Band<T>{q.data_ptr<T>(),
                 k.data_ptr<T>(),
                 v.data_ptr<T>(),
                 mask.defined() ? mask.data_ptr<bool>() : nullptr,
                 q.size(1),
                 n,
                 q.size(3),
                 std::min(w.left, n),
                 std::min(w.right, n),
                 std::min(w.dilation, std::max<int64_t>(n, 1)),
                 tiling.q_rows,
                 tiling.k_cols,
                 static_cast<T>(scale)};
}

// -> out: (B, H, n, dh), lse: (B, H, n)
std::pair<Tensor, Tensor> forward_kernel(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                         const Window& w, double scale, const BandedTiling& tiling) {
  auto out = torch::zeros_like(q);
  auto lse = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "banded_attention_forward", [&] {
    const auto a = describe<scalar_t>(q, k, v, mask, w, scale, tiling);
    const int64_t items = q.size(0) * q.size(1) * a.classes() * a.blocks(0);
    std::vector<double> flops(items, 0.0);
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* l = lse.data_ptr<scalar_t>();
    at::parallel_for(0, items, 1, [&](int64_t b, int64_t e) { forward_items_any(a, b, e, o, l, flops.data()); });
    add_kernel_flops("banded_attention", std::accumulate(flops.begin(), flops.end(), 0.0));
  });
  return {out, lse};
}

// -> dq, dk, dv shaped like q, k, v
std::tuple<Tensor, Tensor, Tensor> backward_kernel(const Tensor& q, const Tensor& k, const Tensor& v,
                                                   const Tensor& mask, const Tensor& out, const Tensor& lse,
                                                   const Tensor& dout, const Window& w, double scale,
                                                   const BandedTiling& tiling) {
  const int64_t BH = q.size(0) * q.size(1);
  const auto D = (dout * out).sum(-1).contiguous();  // (B, H, n)
  auto dq = torch::zeros_like(q);
  Tensor dk, dv;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "banded_attention_backward", [&] {
    const auto a = describe<scalar_t>(q, k, v, mask, w, scale, tiling);
    const int64_t lanes = BH * a.classes(), threads = at::get_num_threads();
    // Enough block groups to give every thread work; each extra group costs one dk, dv copy (O(n) memory).
    const int64_t wanted = (threads + lanes - 1) / std::max<int64_t>(lanes, 1);
    const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(a.blocks(0), wanted));
    dk = torch::zeros({groups, q.size(0), q.size(1), q.size(2), q.size(3)}, q.options());
    dv = torch::zeros_like(dk);
    const BandGrad<scalar_t> g{dout.data_ptr<scalar_t>(),
                               lse.data_ptr<scalar_t>(),
                               D.data_ptr<scalar_t>(),
                               dq.data_ptr<scalar_t>(),
                               dk.data_ptr<scalar_t>(),
                               dv.data_ptr<scalar_t>(),
                               BH,
                               groups};
    const int64_t items = lanes * groups;
    std::vector<double> flops(items, 0.0);
    at::parallel_for(0, items, 1, [&](int64_t b, int64_t e) { backward_items_any(a, g, b, e, flops.data()); });
    add_kernel_flops("banded_attention", std::accumulate(flops.begin(), flops.end(), 0.0));
  });
  if (dk.size(0) == 1) return {dq, dk.squeeze(0), dv.squeeze(0)};
  return {dq, dk.sum(0), dv.sum(0)};
}

// ---------------------------------------------------------------------------------------------------------------
// Autograd function: saves q, k, v, out and the row logsumexp; no (n, n) tensor survives the forward.

struct BandedAttentionFunction : public torch::autograd::Function<BandedAttentionFunction> {
  // q, k, v: (B, H, n, dh), key_mask: (B, n) bool or none -> (B, H, n, dh)
  // (optional rather than undefined: autograd functions take no undefined tensor inputs)
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const c10::optional<Tensor>& key_mask, int64_t window_left, int64_t window_right,
                        int64_t dilation, double scale, const BandedTiling& tiling) {
    RECORD_FUNCTION("cerebra::banded_attention", std::vector<c10::IValue>());  // named in profiles (bench layers --breakdown)
    auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    const Tensor mask = key_mask.has_value() ? *key_mask : Tensor();
    auto [out, lse] = forward_kernel(qc, kc, vc, mask, {window_left, window_right, dilation}, scale, tiling);
    ctx->save_for_backward({qc, kc, vc, out, lse});
    ctx->saved_data["mask"] = mask;
    ctx->saved_data["window_left"] = window_left;
    ctx->saved_data["window_right"] = window_right;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["q_rows"] = tiling.q_rows;
    ctx->saved_data["k_cols"] = tiling.k_cols;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const Tensor none;
    if (!grads[0].defined()) return {none, none, none, none, none, none, none, none, none};
    const auto saved = ctx->get_saved_variables();
    const BandedTiling tiling{ctx->saved_data["q_rows"].toInt(), ctx->saved_data["k_cols"].toInt()};
    const Window w{ctx->saved_data["window_left"].toInt(), ctx->saved_data["window_right"].toInt(),
                   ctx->saved_data["dilation"].toInt()};
    const auto& m = ctx->saved_data["mask"];
    const Tensor mask = m.isTensor() ? m.toTensor() : Tensor();
    auto [dq, dk, dv] = backward_kernel(saved[0], saved[1], saved[2], mask, saved[3], saved[4], grads[0].contiguous(),
                                        w, ctx->saved_data["scale"].toDouble(), tiling);
    return {dq, dk, dv, none, none, none, none, none, none};
  }
};

void check_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                  int64_t window_left, int64_t window_right, int64_t dilation) {
  TORCH_CHECK(q.dim() == 4, op, ": q must be (B, H, n, dh), got ", q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes(), op, ": k must be (B, H, n, dh) = ", q.sizes(), " like q (self-attention), got ",
              k.sizes());
  TORCH_CHECK(v.sizes() == q.sizes(), op, ": v must be (B, H, n, dh) = ", q.sizes(), " like q (self-attention), got ",
              v.sizes());
  TORCH_CHECK(q.is_floating_point() && k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k, v must share one floating dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
              v.scalar_type());
  if (mask.defined()) {
    TORCH_CHECK(mask.dim() == 2 && mask.size(0) == q.size(0) && mask.size(1) == q.size(2), op,
                ": key_padding_mask must be (B, n) = (", q.size(0), ", ", q.size(2), "), got ", mask.sizes());
    TORCH_CHECK(mask.scalar_type() == torch::kBool, op, ": key_padding_mask must be bool, got ", mask.scalar_type());
  }
  TORCH_CHECK(window_left >= 0 && window_right >= 0, op, ": windows must be >= 0, got window_left ", window_left,
              ", window_right ", window_right);
  TORCH_CHECK(dilation >= 1, op, ": dilation must be >= 1, got ", dilation);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

Tensor banded_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask,
                        int64_t window_left, int64_t window_right, int64_t dilation, double scale,
                        const BandedTiling& tiling) {
  check_inputs("banded_attention", q, k, v, key_padding_mask, window_left, window_right, dilation);
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
              "banded_attention: CPU tensors expected, got ", q.device());
  TORCH_CHECK(q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kDouble,
              "banded_attention: float32 or float64 expected, got ", q.scalar_type());
  TORCH_CHECK(q.size(3) > 0, "banded_attention: head dim must be positive, got q ", q.sizes());
  TORCH_CHECK(tiling.q_rows > 0 && tiling.k_cols > 0, "banded_attention: block sizes must be positive, got ",
              tiling.q_rows, " x ", tiling.k_cols);
  c10::optional<Tensor> mask;
  if (key_padding_mask.defined()) mask = key_padding_mask.contiguous();
  return BandedAttentionFunction::apply(q, k, v, mask, window_left, window_right, dilation, scale, tiling);
}

// q, k, v: (B, H, n, dh), key_padding_mask: (B, n) bool or undefined -> (B, H, n, dh)
Tensor banded_attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask,
                            int64_t window_left, int64_t window_right, int64_t dilation, double scale) {
  check_inputs("banded_attention_ref", q, k, v, key_padding_mask, window_left, window_right, dilation);
  const int64_t B = q.size(0), n = q.size(2);
  // Clamped like the kernel (the same band; no overflow in the products below).
  const int64_t wl = std::min(window_left, n), wr = std::min(window_right, n);
  const int64_t d = std::min(dilation, std::max<int64_t>(n, 1));
  const auto pos = torch::arange(n, q.options().dtype(torch::kLong));
  const auto rel = pos.view({1, n}) - pos.view({n, 1});  // (n, n): j - i
  Tensor allowed = rel.remainder(d).eq(0).logical_and(rel.ge(-wl * d)).logical_and(rel.le(wr * d)).view({1, 1, n, n});
  if (key_padding_mask.defined()) allowed = allowed.logical_and(key_padding_mask.view({B, 1, 1, n}));
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;  // (B, H, n, n)
  // A row with no allowed key gets finite scores (uniform softmax) and is then multiplied by zero: output and
  // gradients are 0 rather than NaN.
  const auto row_any = allowed.any(-1, /*keepdim=*/true);
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity())
               .masked_fill(row_any.logical_not(), 0.0);
  const auto probs = torch::softmax(scores, -1) * row_any.to(q.scalar_type());
  return torch::matmul(probs, v);
}

}  // namespace cerebra::ops
