// Exact attention in tiles (FlashAttention-2 on the CPU) beside its reference; see include/cerebra/ops/attention.h.
//
// Forward, one work item per (batch·head, query tile of br rows), parallel with at::parallel_for:
//   for each key tile of bc columns:  S = scale·Q_i K_jᵀ (BLAS)  -> masks -> online softmax (running row max m and
//   row sum l, rescaling the output rows when m grows)  -> O_i += P V_j (BLAS).
//   At the end O_i /= l and lse_i = m + log l are kept for the backward (O(n) memory).
// Backward (FlashAttention-2): D_i = rowsum(dO_i ∘ O_i); one work item per (batch·head, group of key tiles):
//   for each of its key tiles j, for each query tile i that may see it: recompute P = exp(S - lse_i),
//   dV_j += Pᵀ dO_i, dP = dO_i V_jᵀ, dS = P ∘ (dP - D_i), dK_j += scale·dSᵀ Q_i, dQ_i += scale·dS K_j.
//   dK_j, dV_j belong to one item. dQ_i is shared by every key tile, so each key-tile group accumulates its own dQ
//   copy; with at least as many batch·heads as threads there is one group and no copy. No atomics, no races.
#include "cerebra/ops/attention.h"

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
// Problem description shared by the forward and backward tiles.

template <typename T>
struct Attn {
  const T* q;        // (BH, n_q, dh)
  const T* k;        // (BH, n_k, dh)
  const T* v;        // (BH, n_k, dh)
  const bool* mask;  // (B, n_k), true = real key; nullptr = all real
  int64_t H, nq, nk, dh;
  int64_t br, bc;  // tile: query rows x key columns
  bool causal;
  T scale;

  int64_t q_tiles() const { return (nq + br - 1) / br; }
  int64_t k_tiles() const { return (nk + bc - 1) / bc; }
  // How many leading keys of the tile starting at key c0 (nc keys) query row r may attend.
  int64_t allowed(int64_t r, int64_t c0, int64_t nc) const {
    return causal ? std::clamp<int64_t>(r - c0 + 1, 0, nc) : nc;
  }
  const bool* key_mask(int64_t bh) const { return mask ? mask + (bh / H) * nk : nullptr; }
};

// ---------------------------------------------------------------------------------------------------------------
// Forward: one (batch·head, query tile). out rows start zeroed. Scratch: S (br x bc), m, l (br), bias (bc).

template <typename T, int W>
CEREBRA_INLINE void forward_item(const Attn<T>& a, int64_t bh, int64_t qt, T* out, T* lse, T* S, T* m, T* l, T* bias,
                                 double& flops) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t dh = a.dh, r0 = qt * a.br, nr = std::min(a.br, a.nq - r0);
  const T* Q = a.q + (bh * a.nq + r0) * dh;
  const T* K = a.k + bh * a.nk * dh;
  const T* V = a.v + bh * a.nk * dh;
  const bool* mask = a.key_mask(bh);
  T* O = out + (bh * a.nq + r0) * dh;
  fill(m, nr, kNegInf);
  fill(l, nr, T(0));
  const int64_t kend = a.causal ? std::min(a.nk, r0 + nr) : a.nk;  // keys past the last row are never attended
  for (int64_t c0 = 0; c0 < kend; c0 += a.bc) {
    const int64_t nc = std::min(a.bc, kend - c0);
    const auto [some_padded, all_padded] = key_bias(mask, 1, c0, nc, bias);
    if (all_padded) continue;
    blas::gemm(false, true, nr, nc, dh, a.scale, Q, dh, K + c0 * dh, dh, T(0), S, nc);
    for (int64_t r = 0; r < nr; ++r) {
      T* s = S + r * nc;
      const int64_t lim = a.allowed(r0 + r, c0, nc);
      if (lim > 0 && some_padded) row_add<T, W>(s, bias, lim);
      const T m_new = std::max(m[r], lim > 0 ? row_max<T, W>(s, lim) : kNegInf);
      if (m_new == kNegInf) {  // nothing attended yet
        fill(s, nc, T(0));
        continue;
      }
      const T alpha = std::exp(m[r] - m_new);  // 0 when m[r] = -inf
      const T sum = row_exp<T, W>(s, lim, m_new);
      fill(s + lim, nc - lim, T(0));
      if (alpha != T(1)) row_scale<T, W>(O + r * dh, dh, alpha);
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
    }
    blas::gemm(false, false, nr, dh, nc, T(1), S, nc, V + c0 * dh, dh, T(1), O, dh);
    flops += 4.0 * nr * nc * dh;
  }
  T* L = lse + bh * a.nq + r0;
  for (int64_t r = 0; r < nr; ++r) {
    if (l[r] > T(0)) {
      row_scale<T, W>(O + r * dh, dh, T(1) / l[r]);
      L[r] = m[r] + std::log(l[r]);
    } else {
      L[r] = kNegInf;  // no key: the row stays zero
    }
  }
}

// Work item t -> (batch·head, query tile). Query tiles are interleaved from both ends so that the contiguous item
// ranges at::parallel_for hands to each thread carry similar work under a causal mask.
inline std::pair<int64_t, int64_t> forward_item_index(int64_t t, int64_t q_tiles) {
  const int64_t bh = t / q_tiles, i = t % q_tiles;
  return {bh, (i % 2 == 0) ? i / 2 : q_tiles - 1 - i / 2};
}

template <typename T, int W>
CEREBRA_INLINE void forward_items(const Attn<T>& a, int64_t begin, int64_t end, T* out, T* lse, double* flops) {
  std::vector<T> work(a.br * a.bc + 2 * a.br + a.bc);
  T *S = work.data(), *m = S + a.br * a.bc, *l = m + a.br, *bias = l + a.br;
  for (int64_t t = begin; t < end; ++t) {
    const auto [bh, qt] = forward_item_index(t, a.q_tiles());
    forward_item<T, W>(a, bh, qt, out, lse, S, m, l, bias, flops[t]);
  }
}

CEREBRA_TARGET_AVX2 void forward_items_avx2(const Attn<float>& a, int64_t begin, int64_t end, float* out, float* lse,
                                            double* flops) {
  forward_items<float, simd::lanes<float>(true)>(a, begin, end, out, lse, flops);
}

template <typename T>
void forward_items_any(const Attn<T>& a, int64_t begin, int64_t end, T* out, T* lse, double* flops) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return forward_items_avx2(a, begin, end, out, lse, flops);
  }
  forward_items<T, simd::lanes<T>(false)>(a, begin, end, out, lse, flops);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward: one (batch·head, group of key tiles j = group, group + groups, ...). The dk, dv rows of those key tiles
// start zeroed and are written by this item only; dq is the group's own accumulator.
// Scratch: S, dP (br x bc), bias (bc).

template <typename T>
struct AttnGrad {
  const T* dout;  // (BH, n_q, dh)
  const T* lse;   // (BH, n_q)
  const T* D;     // (BH, n_q): rowsum(dout ∘ out)
  T* dq;          // (groups, BH, n_q, dh)
  T* dk;          // (BH, n_k, dh)
  T* dv;          // (BH, n_k, dh)
  int64_t BH, groups;
};

template <typename T, int W>
CEREBRA_INLINE void backward_item(const Attn<T>& a, const AttnGrad<T>& g, int64_t bh, int64_t group, T* S, T* dP,
                                  T* bias, double& flops) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t dh = a.dh, q_off = bh * a.nq, k_off = bh * a.nk;
  const T* Q = a.q + q_off * dh;
  const T* K = a.k + k_off * dh;
  const T* V = a.v + k_off * dh;
  const T* dO = g.dout + q_off * dh;
  const T* L = g.lse + q_off;
  const T* D = g.D + q_off;
  T* dQ = g.dq + (group * g.BH + bh) * a.nq * dh;
  const bool* mask = a.key_mask(bh);
  for (int64_t j = group; j < a.k_tiles(); j += g.groups) {
    const int64_t c0 = j * a.bc, nc = std::min(a.bc, a.nk - c0);
    const auto [some_padded, all_padded] = key_bias(mask, 1, c0, nc, bias);
    if (all_padded) continue;
    const T* Kj = K + c0 * dh;
    const T* Vj = V + c0 * dh;
    T* dKj = g.dk + (k_off + c0) * dh;
    T* dVj = g.dv + (k_off + c0) * dh;
    // Causal: the first query tile holding a row r >= c0.
    for (int64_t r0 = a.causal ? (c0 / a.br) * a.br : 0; r0 < a.nq; r0 += a.br) {
      const int64_t nr = std::min(a.br, a.nq - r0);
      const T* Qi = Q + r0 * dh;
      const T* dOi = dO + r0 * dh;
      blas::gemm(false, true, nr, nc, dh, a.scale, Qi, dh, Kj, dh, T(0), S, nc);  // S = s Q_i K_jᵀ
      for (int64_t r = 0; r < nr; ++r) {                                          // S -> P, 0 where not attended
        T* s = S + r * nc;
        const int64_t lim = a.allowed(r0 + r, c0, nc);
        const T lse_r = L[r0 + r];
        if (lim == 0 || lse_r == kNegInf) {
          fill(s, nc, T(0));
          continue;
        }
        if (some_padded) row_add<T, W>(s, bias, lim);
        row_exp<T, W>(s, lim, lse_r);
        fill(s + lim, nc - lim, T(0));
      }
      blas::gemm(true, false, nc, dh, nr, T(1), S, nc, dOi, dh, T(1), dVj, dh);                     // dV_j += Pᵀ dO_i
      blas::gemm(false, true, nr, nc, dh, T(1), dOi, dh, Vj, dh, T(0), dP, nc);                     // dP = dO_i V_jᵀ
      for (int64_t r = 0; r < nr; ++r) row_dsoftmax<T, W>(S + r * nc, dP + r * nc, nc, D[r0 + r]);  // S -> dS
      blas::gemm(true, false, nc, dh, nr, a.scale, S, nc, Qi, dh, T(1), dKj, dh);            // dK_j += s dSᵀ Q_i
      blas::gemm(false, false, nr, dh, nc, a.scale, S, nc, Kj, dh, T(1), dQ + r0 * dh, dh);  // dQ_i += s dS K_j
      flops += 10.0 * nr * nc * dh;
    }
  }
}

template <typename T, int W>
CEREBRA_INLINE void backward_items(const Attn<T>& a, const AttnGrad<T>& g, int64_t begin, int64_t end, double* flops) {
  std::vector<T> work(2 * a.br * a.bc + a.bc);
  T *S = work.data(), *dP = S + a.br * a.bc, *bias = dP + a.br * a.bc;
  for (int64_t t = begin; t < end; ++t) backward_item<T, W>(a, g, t / g.groups, t % g.groups, S, dP, bias, flops[t]);
}

CEREBRA_TARGET_AVX2 void backward_items_avx2(const Attn<float>& a, const AttnGrad<float>& g, int64_t begin, int64_t end,
                                             double* flops) {
  backward_items<float, simd::lanes<float>(true)>(a, g, begin, end, flops);
}

template <typename T>
void backward_items_any(const Attn<T>& a, const AttnGrad<T>& g, int64_t begin, int64_t end, double* flops) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return backward_items_avx2(a, g, begin, end, flops);
  }
  backward_items<T, simd::lanes<T>(false)>(a, g, begin, end, flops);
}

// ---------------------------------------------------------------------------------------------------------------
// Drivers on tensors (contiguous q, k, v; mask bool contiguous or undefined).

template <typename T>
Attn<T> describe(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, bool causal, double scale,
                 const AttentionTiling& tiling) {
  return Attn<T>{q.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), mask.defined() ? mask.data_ptr<bool>() : nullptr,
                 q.size(1),       q.size(2),       k.size(2),       q.size(3),
                 tiling.q_rows,   tiling.k_cols,   causal,          static_cast<T>(scale)};
}

// -> out: (B, H, n_q, dh), lse: (B, H, n_q)
std::pair<Tensor, Tensor> forward_kernel(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                         bool causal, double scale, const AttentionTiling& tiling) {
  auto out = torch::zeros_like(q);
  auto lse = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "tiled_attention_forward", [&] {
    const auto a = describe<scalar_t>(q, k, v, mask, causal, scale, tiling);
    const int64_t items = q.size(0) * q.size(1) * a.q_tiles();
    std::vector<double> flops(items, 0.0);
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* l = lse.data_ptr<scalar_t>();
    at::parallel_for(0, items, 1, [&](int64_t b, int64_t e) { forward_items_any(a, b, e, o, l, flops.data()); });
    add_kernel_flops("tiled_attention", std::accumulate(flops.begin(), flops.end(), 0.0));
  });
  return {out, lse};
}

// -> dq, dk, dv shaped like q, k, v
std::tuple<Tensor, Tensor, Tensor> backward_kernel(const Tensor& q, const Tensor& k, const Tensor& v,
                                                   const Tensor& mask, const Tensor& out, const Tensor& lse,
                                                   const Tensor& dout, bool causal, double scale,
                                                   const AttentionTiling& tiling) {
  const int64_t BH = q.size(0) * q.size(1);
  const auto D = (dout * out).sum(-1).contiguous();  // (B, H, n_q)
  auto dk = torch::zeros_like(k), dv = torch::zeros_like(v);
  const int64_t k_tiles = (k.size(2) + tiling.k_cols - 1) / tiling.k_cols;
  const int64_t threads = at::get_num_threads();
  // Enough key-tile groups to give every thread work; each extra group costs one dq copy (O(n) memory).
  const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(k_tiles, (threads + BH - 1) / BH));
  auto dq = torch::zeros({groups, q.size(0), q.size(1), q.size(2), q.size(3)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "tiled_attention_backward", [&] {
    const auto a = describe<scalar_t>(q, k, v, mask, causal, scale, tiling);
    const AttnGrad<scalar_t> g{dout.data_ptr<scalar_t>(),
                               lse.data_ptr<scalar_t>(),
                               D.data_ptr<scalar_t>(),
                               dq.data_ptr<scalar_t>(),
                               dk.data_ptr<scalar_t>(),
                               dv.data_ptr<scalar_t>(),
                               BH,
                               groups};
    const int64_t items = BH * groups;
    std::vector<double> flops(items, 0.0);
    at::parallel_for(0, items, 1, [&](int64_t b, int64_t e) { backward_items_any(a, g, b, e, flops.data()); });
    add_kernel_flops("tiled_attention", std::accumulate(flops.begin(), flops.end(), 0.0));
  });
  return {groups == 1 ? dq.squeeze(0) : dq.sum(0), dk, dv};
}

// ---------------------------------------------------------------------------------------------------------------
// Autograd function: saves q, k, v, out and the row logsumexp; no (n_q, n_k) tensor survives the forward.

struct TiledAttentionFunction : public torch::autograd::Function<TiledAttentionFunction> {
  // q: (B, H, n_q, dh), k, v: (B, H, n_k, dh), key_mask: (B, n_k) bool or none -> (B, H, n_q, dh)
  // (optional rather than undefined: autograd functions take no undefined tensor inputs)
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const c10::optional<Tensor>& key_mask, bool causal, double scale,
                        const AttentionTiling& tiling) {
    auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    const Tensor mask = key_mask.has_value() ? *key_mask : Tensor();
    auto [out, lse] = forward_kernel(qc, kc, vc, mask, causal, scale, tiling);
    ctx->save_for_backward({qc, kc, vc, out, lse});
    ctx->saved_data["mask"] = mask;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["q_rows"] = tiling.q_rows;
    ctx->saved_data["k_cols"] = tiling.k_cols;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    const AttentionTiling tiling{ctx->saved_data["q_rows"].toInt(), ctx->saved_data["k_cols"].toInt()};
    const auto& m = ctx->saved_data["mask"];
    const Tensor mask = m.isTensor() ? m.toTensor() : Tensor();
    auto [dq, dk, dv] =
        backward_kernel(saved[0], saved[1], saved[2], mask, saved[3], saved[4], grads[0].contiguous(),
                        ctx->saved_data["causal"].toBool(), ctx->saved_data["scale"].toDouble(), tiling);
    return {dq, dk, dv, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

void check_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask) {
  TORCH_CHECK(q.dim() == 4, op, ": q must be (B, H, n_q, dh), got ", q.sizes());
  const int64_t B = q.size(0), H = q.size(1), dh = q.size(3);
  TORCH_CHECK(k.dim() == 4 && k.size(0) == B && k.size(1) == H && k.size(3) == dh, op,
              ": k must be (B, H, n_k, dh) = (", B, ", ", H, ", n_k, ", dh, ") like q, got ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), op, ": v must be (B, H, n_k, dh) = ", k.sizes(), " like k, got ", v.sizes());
  TORCH_CHECK(q.is_floating_point() && k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k, v must share one floating dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
              v.scalar_type());
  if (mask.defined()) {
    TORCH_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == k.size(2), op,
                ": key_padding_mask must be (B, n_k) = (", B, ", ", k.size(2), "), got ", mask.sizes());
    TORCH_CHECK(mask.scalar_type() == torch::kBool, op, ": key_padding_mask must be bool, got ", mask.scalar_type());
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

Tensor tiled_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask, bool causal,
                       double scale, const AttentionTiling& tiling) {
  check_inputs("tiled_attention", q, k, v, key_padding_mask);
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
              "tiled_attention: CPU tensors expected, got ", q.device());
  TORCH_CHECK(q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kDouble,
              "tiled_attention: float32 or float64 expected, got ", q.scalar_type());
  TORCH_CHECK(q.size(3) > 0, "tiled_attention: head dim must be positive, got q ", q.sizes());
  TORCH_CHECK(tiling.q_rows > 0 && tiling.k_cols > 0, "tiled_attention: tile sizes must be positive, got ",
              tiling.q_rows, " x ", tiling.k_cols);
  c10::optional<Tensor> mask;
  if (key_padding_mask.defined()) mask = key_padding_mask.contiguous();
  return TiledAttentionFunction::apply(q, k, v, mask, causal, scale, tiling);
}

// q: (B, H, n_q, dh), k, v: (B, H, n_k, dh), key_padding_mask: (B, n_k) bool or undefined -> (B, H, n_q, dh)
Tensor attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask, bool causal,
                     double scale) {
  check_inputs("attention_ref", q, k, v, key_padding_mask);
  const int64_t B = q.size(0), nq = q.size(2), nk = k.size(2);
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale;  // (B, H, n_q, n_k)
  Tensor allowed;                                               // broadcasts to scores; true = may attend
  if (key_padding_mask.defined()) allowed = key_padding_mask.view({B, 1, 1, nk});
  if (causal) {
    auto tri = torch::ones({nq, nk}, q.options().dtype(torch::kBool)).tril().view({1, 1, nq, nk});  // j <= i
    allowed = allowed.defined() ? allowed.logical_and(tri) : tri;
  }
  if (!allowed.defined()) return torch::matmul(torch::softmax(scores, -1), v);
  // A row with no allowed key gets finite scores (uniform softmax) and is then multiplied by zero: output and
  // gradients are 0 rather than NaN.
  const auto row_any = allowed.any(-1, /*keepdim=*/true);
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity())
               .masked_fill(row_any.logical_not(), 0.0);
  const auto probs = torch::softmax(scores, -1) * row_any.to(q.scalar_type());
  return torch::matmul(probs, v);
}

}  // namespace cerebra::ops
