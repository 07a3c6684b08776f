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
// Problem description shared by the forward and backward tiles. The work is a set of segments, each one attention
// problem of one head over one sequence: rows [q_off, q_off + nq) of q (and of the output and the logsumexp) attend
// over rows [k_off, k_off + nk) of k and v, every row dh values.
//   padded:  q (B, H, n_q, dh), k, v (B, H, n_k, dh): segment bh = b·H + h, every segment n_q x n_k, key mask rows.
//   packed:  q (H, T_q, dh), k, v (H, T_k, dh) with sequence offsets cu_q, cu_k (S + 1 each): segment h·S + s is
//            sequence s of head h, rows cu_q[s] .. cu_q[s+1] over keys cu_k[s] .. cu_k[s+1]; no padding, no mask.

struct Segment {
  int64_t q_off, k_off, nq, nk;
  const bool* mask;  // nk entries, true = real key; nullptr = all real
};

template <typename T>
struct Attn {
  const T* q;
  const T* k;
  const T* v;
  const bool* mask;  // padded: (B, n_k), true = real key; nullptr = all real
  const int64_t* cu_q = nullptr;  // packed: sequence offsets (S + 1); nullptr = padded
  const int64_t* cu_k = nullptr;
  int64_t H, nq, nk, dh;  // padded: n_q, n_k per sequence; packed: T_q, T_k
  int64_t segments;       // padded: B·H; packed: H·S
  int64_t br, bc;         // tile: query rows x key columns
  bool causal;
  T scale;

  Segment segment(int64_t i) const {
    if (cu_q == nullptr) return {i * nq, i * nk, nq, nk, mask ? mask + (i / H) * nk : nullptr};
    const int64_t S = segments / H, h = i / S, s = i % S;
    return {h * nq + cu_q[s], h * nk + cu_k[s], cu_q[s + 1] - cu_q[s], cu_k[s + 1] - cu_k[s], nullptr};
  }
  int64_t q_tiles(const Segment& g) const { return (g.nq + br - 1) / br; }
  int64_t k_tiles(const Segment& g) const { return (g.nk + bc - 1) / bc; }
  // How many leading keys of the tile starting at key c0 (nc keys) query row r may attend.
  int64_t allowed(int64_t r, int64_t c0, int64_t nc) const {
    return causal ? std::clamp<int64_t>(r - c0 + 1, 0, nc) : nc;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Forward: one (segment, query tile). out rows start zeroed. Scratch: S (br x bc), m, l (br), bias (bc).

template <typename T, int W>
CEREBRA_INLINE void forward_item(const Attn<T>& a, int64_t seg, int64_t qt, T* out, T* lse, T* S, T* m, T* l, T* bias,
                                 double& flops) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const Segment g = a.segment(seg);
  const int64_t dh = a.dh, r0 = qt * a.br, nr = std::min(a.br, g.nq - r0);
  const T* Q = a.q + (g.q_off + r0) * dh;
  const T* K = a.k + g.k_off * dh;
  const T* V = a.v + g.k_off * dh;
  const bool* mask = g.mask;
  T* O = out + (g.q_off + r0) * dh;
  fill(m, nr, kNegInf);
  fill(l, nr, T(0));
  const int64_t kend = a.causal ? std::min(g.nk, r0 + nr) : g.nk;  // keys past the last row are never attended
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
  T* L = lse + g.q_off + r0;
  for (int64_t r = 0; r < nr; ++r) {
    if (l[r] > T(0)) {
      row_scale<T, W>(O + r * dh, dh, T(1) / l[r]);
      L[r] = m[r] + std::log(l[r]);
    } else {
      L[r] = kNegInf;  // no key: the row stays zero
    }
  }
}

// The forward's work items: (segment, query tile) pairs. Within a segment the query tiles are interleaved from both
// ends so that the contiguous item ranges at::parallel_for hands to each thread carry similar work under a causal
// mask.
using Item = std::pair<int64_t, int64_t>;

template <typename T>
std::vector<Item> forward_work(const Attn<T>& a) {
  std::vector<Item> items;
  for (int64_t seg = 0; seg < a.segments; ++seg) {
    const int64_t tiles = a.q_tiles(a.segment(seg));
    for (int64_t i = 0; i < tiles; ++i) items.emplace_back(seg, (i % 2 == 0) ? i / 2 : tiles - 1 - i / 2);
  }
  return items;
}

template <typename T, int W>
CEREBRA_INLINE void forward_items(const Attn<T>& a, const Item* items, int64_t begin, int64_t end, T* out, T* lse,
                                  double* flops) {
  std::vector<T> work(a.br * a.bc + 2 * a.br + a.bc);
  T *S = work.data(), *m = S + a.br * a.bc, *l = m + a.br, *bias = l + a.br;
  for (int64_t t = begin; t < end; ++t)
    forward_item<T, W>(a, items[t].first, items[t].second, out, lse, S, m, l, bias, flops[t]);
}

CEREBRA_TARGET_AVX2 void forward_items_avx2(const Attn<float>& a, const Item* items, int64_t begin, int64_t end,
                                            float* out, float* lse, double* flops) {
  forward_items<float, simd::lanes<float>(true)>(a, items, begin, end, out, lse, flops);
}

template <typename T>
void forward_items_any(const Attn<T>& a, const Item* items, int64_t begin, int64_t end, T* out, T* lse,
                       double* flops) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return forward_items_avx2(a, items, begin, end, out, lse, flops);
  }
  forward_items<T, simd::lanes<T>(false)>(a, items, begin, end, out, lse, flops);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward: one (segment, group of key tiles j = group, group + groups, ...). The dk, dv rows of those key tiles
// start zeroed and are written by this item only; dq is the group's own accumulator.
// Scratch: S, dP (br x bc), bias (bc).

template <typename T>
struct AttnGrad {
  const T* dout;  // like q
  const T* lse;   // q's rows
  const T* D;     // q's rows: rowsum(dout ∘ out)
  T* dq;          // (groups, q's rows, dh)
  T* dk;          // like k
  T* dv;          // like v
  int64_t q_rows, groups;  // q_rows: every row of q (q.numel() / dh)
};

template <typename T, int W>
CEREBRA_INLINE void backward_item(const Attn<T>& a, const AttnGrad<T>& g, int64_t seg, int64_t group, T* S, T* dP,
                                  T* bias, double& flops) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const Segment sg = a.segment(seg);
  const int64_t dh = a.dh, q_off = sg.q_off, k_off = sg.k_off;
  const T* Q = a.q + q_off * dh;
  const T* K = a.k + k_off * dh;
  const T* V = a.v + k_off * dh;
  const T* dO = g.dout + q_off * dh;
  const T* L = g.lse + q_off;
  const T* D = g.D + q_off;
  T* dQ = g.dq + (group * g.q_rows + q_off) * dh;
  const bool* mask = sg.mask;
  for (int64_t j = group; j < a.k_tiles(sg); j += g.groups) {
    const int64_t c0 = j * a.bc, nc = std::min(a.bc, sg.nk - c0);
    const auto [some_padded, all_padded] = key_bias(mask, 1, c0, nc, bias);
    if (all_padded) continue;
    const T* Kj = K + c0 * dh;
    const T* Vj = V + c0 * dh;
    T* dKj = g.dk + (k_off + c0) * dh;
    T* dVj = g.dv + (k_off + c0) * dh;
    // Causal: the first query tile holding a row r >= c0.
    for (int64_t r0 = a.causal ? (c0 / a.br) * a.br : 0; r0 < sg.nq; r0 += a.br) {
      const int64_t nr = std::min(a.br, sg.nq - r0);
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
// Drivers on tensors (contiguous q, k, v; mask bool contiguous or undefined; cu_q, cu_k int64 contiguous (S + 1)
// for the packed layout, undefined for the padded one).

struct Layout {
  Tensor mask, cu_q, cu_k;
  bool packed() const { return cu_q.defined(); }
};

template <typename T>
Attn<T> describe(const Tensor& q, const Tensor& k, const Tensor& v, const Layout& lay, bool causal, double scale,
                 const AttentionTiling& tiling) {
  Attn<T> a{};
  a.q = q.data_ptr<T>();
  a.k = k.data_ptr<T>();
  a.v = v.data_ptr<T>();
  a.mask = lay.mask.defined() ? lay.mask.data_ptr<bool>() : nullptr;
  a.br = tiling.q_rows;
  a.bc = tiling.k_cols;
  a.causal = causal;
  a.scale = static_cast<T>(scale);
  if (lay.packed()) {  // (H, T, dh)
    a.cu_q = lay.cu_q.data_ptr<int64_t>();
    a.cu_k = lay.cu_k.data_ptr<int64_t>();
    a.H = q.size(0), a.nq = q.size(1), a.nk = k.size(1), a.dh = q.size(2);
    a.segments = a.H * (lay.cu_q.numel() - 1);
  } else {  // (B, H, n, dh)
    a.H = q.size(1), a.nq = q.size(2), a.nk = k.size(2), a.dh = q.size(3);
    a.segments = q.size(0) * a.H;
  }
  return a;
}

// Every dimension of t but the last (a row per entry): the logsumexp's shape.
std::vector<int64_t> row_shape(const Tensor& t) { return std::vector<int64_t>(t.sizes().begin(), t.sizes().end() - 1); }

// -> out shaped like q, lse: q's rows
std::pair<Tensor, Tensor> forward_kernel(const Tensor& q, const Tensor& k, const Tensor& v, const Layout& lay,
                                         bool causal, double scale, const AttentionTiling& tiling) {
  auto out = torch::zeros_like(q);
  auto lse = torch::full(row_shape(q), -std::numeric_limits<double>::infinity(), q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "tiled_attention_forward", [&] {
    const auto a = describe<scalar_t>(q, k, v, lay, causal, scale, tiling);
    const std::vector<Item> work = forward_work(a);
    const int64_t items = static_cast<int64_t>(work.size());
    std::vector<double> flops(items, 0.0);
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* l = lse.data_ptr<scalar_t>();
    at::parallel_for(0, items, 1,
                     [&](int64_t b, int64_t e) { forward_items_any(a, work.data(), b, e, o, l, flops.data()); });
    add_kernel_flops("tiled_attention", std::accumulate(flops.begin(), flops.end(), 0.0));
  });
  return {out, lse};
}

// -> dq, dk, dv shaped like q, k, v
std::tuple<Tensor, Tensor, Tensor> backward_kernel(const Tensor& q, const Tensor& k, const Tensor& v,
                                                   const Layout& lay, const Tensor& out, const Tensor& lse,
                                                   const Tensor& dout, bool causal, double scale,
                                                   const AttentionTiling& tiling) {
  const auto D = (dout * out).sum(-1).contiguous();  // q's rows
  auto dk = torch::zeros_like(k), dv = torch::zeros_like(v);
  const int64_t threads = at::get_num_threads();
  std::vector<int64_t> dq_shape = q.sizes().vec();
  Tensor dq;  // (groups, q's shape): one accumulator per key-tile group
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "tiled_attention_backward", [&] {
    const auto a = describe<scalar_t>(q, k, v, lay, causal, scale, tiling);
    int64_t k_tiles = 0;
    for (int64_t seg = 0; seg < a.segments; ++seg) k_tiles = std::max(k_tiles, a.k_tiles(a.segment(seg)));
    // Enough key-tile groups to give every thread work; each extra group costs one dq copy (O(n) memory).
    const int64_t groups =
        std::max<int64_t>(1, std::min<int64_t>(k_tiles, (threads + a.segments - 1) / std::max<int64_t>(a.segments, 1)));
    dq_shape.insert(dq_shape.begin(), groups);
    dq = torch::zeros(dq_shape, q.options());
    const AttnGrad<scalar_t> g{dout.data_ptr<scalar_t>(),
                               lse.data_ptr<scalar_t>(),
                               D.data_ptr<scalar_t>(),
                               dq.data_ptr<scalar_t>(),
                               dk.data_ptr<scalar_t>(),
                               dv.data_ptr<scalar_t>(),
                               q.numel() / a.dh,
                               groups};
    const int64_t items = a.segments * groups;
    std::vector<double> flops(items, 0.0);
    at::parallel_for(0, items, 1, [&](int64_t b, int64_t e) { backward_items_any(a, g, b, e, flops.data()); });
    add_kernel_flops("tiled_attention", std::accumulate(flops.begin(), flops.end(), 0.0));
  });
  return {dq.size(0) == 1 ? dq.squeeze(0) : dq.sum(0), dk, dv};
}

// ---------------------------------------------------------------------------------------------------------------
// Autograd function: saves q, k, v, out and the row logsumexp; no (n_q, n_k) tensor survives the forward.

struct TiledAttentionFunction : public torch::autograd::Function<TiledAttentionFunction> {
  // Padded: q (B, H, n_q, dh), k, v (B, H, n_k, dh); packed: q (H, T_q, dh), k, v (H, T_k, dh) -> shaped like q.
  // The layout's tensors are not differentiable inputs (autograd functions take no undefined tensor inputs).
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Layout& lay, bool causal, double scale, const AttentionTiling& tiling) {
    RECORD_FUNCTION("cerebra::tiled_attention", std::vector<c10::IValue>());  // named in profiles (bench layers --breakdown)
    auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    auto [out, lse] = forward_kernel(qc, kc, vc, lay, causal, scale, tiling);
    ctx->save_for_backward({qc, kc, vc, out, lse});
    ctx->saved_data["mask"] = lay.mask;
    ctx->saved_data["cu_q"] = lay.cu_q;
    ctx->saved_data["cu_k"] = lay.cu_k;
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
    auto tensor_or_none = [&](const char* key) {
      const auto& t = ctx->saved_data[key];
      return t.isTensor() ? t.toTensor() : Tensor();
    };
    const Layout lay{tensor_or_none("mask"), tensor_or_none("cu_q"), tensor_or_none("cu_k")};
    auto [dq, dk, dv] =
        backward_kernel(saved[0], saved[1], saved[2], lay, saved[3], saved[4], grads[0].contiguous(),
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

// q, k, v: (H, T, dh) like tiled_attention_packed's; cu_q, cu_k: int64 offsets 0 = c_0 <= ... <= c_S = T.
void check_packed_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_q,
                         const Tensor& cu_k) {
  TORCH_CHECK(q.dim() == 3, op, ": q must be (H, T_q, dh), got ", q.sizes());
  const int64_t H = q.size(0), dh = q.size(2);
  TORCH_CHECK(k.dim() == 3 && k.size(0) == H && k.size(2) == dh, op, ": k must be (H, T_k, dh) = (", H, ", T_k, ",
              dh, ") like q, got ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), op, ": v must be (H, T_k, dh) = ", k.sizes(), " like k, got ", v.sizes());
  TORCH_CHECK(q.is_floating_point() && k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k, v must share one floating dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
              v.scalar_type());
  auto check_offsets = [&](const char* name, const Tensor& cu, int64_t total) {
    TORCH_CHECK(cu.dim() == 1 && cu.numel() >= 1 && cu.scalar_type() == torch::kLong && cu.device().is_cpu(), op,
                ": ", name, " must be a CPU int64 vector of S + 1 sequence offsets, got ", cu.scalar_type(), " ",
                cu.sizes());
    const auto c = cu.contiguous();
    const int64_t* p = c.data_ptr<int64_t>();
    TORCH_CHECK(p[0] == 0 && p[c.numel() - 1] == total, op, ": ", name, " must run from 0 to ", total,
                " (the packed rows), got ", p[0], " .. ", p[c.numel() - 1]);
    for (int64_t s = 1; s < c.numel(); ++s)
      TORCH_CHECK(p[s] >= p[s - 1], op, ": ", name, " must not decrease, got ", p[s - 1], " then ", p[s],
                  " at sequence ", s - 1);
  };
  check_offsets("cu_q", cu_q, q.size(1));
  check_offsets("cu_k", cu_k, k.size(1));
  TORCH_CHECK(cu_q.numel() == cu_k.numel(), op, ": cu_q and cu_k must describe the same sequences, got ",
              cu_q.numel() - 1, " and ", cu_k.numel() - 1);
}

void check_kernel_inputs(const char* op, const Tensor& q, const AttentionTiling& tiling) {
  TORCH_CHECK(q.device().is_cpu(), op, ": CPU tensors expected, got ", q.device());
  TORCH_CHECK(q.scalar_type() == torch::kFloat || q.scalar_type() == torch::kDouble, op,
              ": float32 or float64 expected, got ", q.scalar_type());
  TORCH_CHECK(q.size(-1) > 0, op, ": head dim must be positive, got q ", q.sizes());
  TORCH_CHECK(tiling.q_rows > 0 && tiling.k_cols > 0, op, ": tile sizes must be positive, got ", tiling.q_rows,
              " x ", tiling.k_cols);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

Tensor tiled_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask, bool causal,
                       double scale, const AttentionTiling& tiling) {
  check_inputs("tiled_attention", q, k, v, key_padding_mask);
  check_kernel_inputs("tiled_attention", q, tiling);
  const Layout lay{key_padding_mask.defined() ? key_padding_mask.contiguous() : Tensor(), Tensor(), Tensor()};
  return TiledAttentionFunction::apply(q, k, v, lay, causal, scale, tiling);
}

Tensor tiled_attention_packed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_q,
                              const Tensor& cu_k, bool causal, double scale, const AttentionTiling& tiling) {
  check_packed_inputs("tiled_attention_packed", q, k, v, cu_q, cu_k);
  check_kernel_inputs("tiled_attention_packed", q, tiling);
  const Layout lay{Tensor(), cu_q.contiguous(), cu_k.contiguous()};
  return TiledAttentionFunction::apply(q, k, v, lay, causal, scale, tiling);
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

// q: (H, T_q, dh), k, v: (H, T_k, dh), cu_q, cu_k: (S + 1) -> (H, T_q, dh), one attention_ref per sequence
Tensor attention_packed_ref(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_q, const Tensor& cu_k,
                            bool causal, double scale) {
  check_packed_inputs("attention_packed_ref", q, k, v, cu_q, cu_k);
  const auto cq = cu_q.contiguous(), ck = cu_k.contiguous();
  const int64_t* pq = cq.data_ptr<int64_t>();
  const int64_t* pk = ck.data_ptr<int64_t>();
  std::vector<Tensor> parts;
  for (int64_t s = 0; s + 1 < cq.numel(); ++s) {
    const int64_t nq = pq[s + 1] - pq[s], nk = pk[s + 1] - pk[s];
    if (nq == 0) continue;
    auto qs = q.narrow(1, pq[s], nq).unsqueeze(0);  // (1, H, nq, dh)
    if (nk == 0) {
      parts.push_back(torch::zeros_like(qs[0]));
      continue;
    }
    parts.push_back(attention_ref(qs, k.narrow(1, pk[s], nk).unsqueeze(0), v.narrow(1, pk[s], nk).unsqueeze(0),
                                  Tensor(), causal, scale)[0]);
  }
  return parts.empty() ? torch::zeros_like(q) : torch::cat(parts, 1);
}

}  // namespace cerebra::ops
