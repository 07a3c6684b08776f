// RWKV-4 WKV on the CPU beside its reference; see include/cerebra/ops/wkv.h.
//
// wkv = wd = -exp(w) in torch ops (autograd carries the chain rule) around the kernel proper, an autograd function
// of (wd, u, k, v).
// Layout: k, v, y are (B, T, C) with C contiguous. A work item is (b, range of channels), parallel with
// at::parallel_for; T is walked sequentially, and at every step the range's channels run W per vector (8 floats with
// AVX2, see simd.h) with their states in a scratch row: the row segments read at each step are contiguous and the
// channels are independent recurrences whose exp latencies the CPU overlaps.
//
// Forward per channel, state (aa, bb, pp) = the sums Σ e^{(t-1-i)wd + k_i} v_i, Σ e^{(t-1-i)wd + k_i} scaled by
// e^{-pp}:
//   P = max(pp, u + k_t), e1 = e^{pp - P}, e2 = e^{u + k_t - P}:  y_t = (e1·aa + e2·v_t) / (e1·bb + e2)
//   p = max(wd + pp, k_t), f1 = e^{wd + pp - p}, f2 = e^{k_t - p}:  aa = f1·aa + f2·v_t, bb = f1·bb + f2, pp = p
// Each pair (e1, e2) needs one exp only: one of its two exponents is 0.
//
// Backward (gy = dL/dy). With D_t = e^P·(e1·bb + e2) the true denominator and q_t = gy_t / D_t:
//   dwd = Σ_t q_t (a'_{t-1} - y_t b'_{t-1}),  a'_s = d a_s / d wd = e^{wd} (a'_{s-1} + a_{s-1})  (b' alike)
//   du  = Σ_t q_t e^{u+k_t} (v_t - y_t)
//   dk_i = q_i e^{u+k_i} (v_i - y_i) + e^{k_i} (v_i G_i - H_i),  dv_i = q_i e^{u+k_i} + e^{k_i} G_i
//   G_i = Σ_{t>i} q_t e^{(t-1-i)wd} = q_{i+1} + e^{wd} G_{i+1},  H_i = Σ_{t>i} q_t y_t e^{(t-1-i)wd} alike.
// Pass 1 (t ascending) recomputes the forward state with a', b' (scaled like aa, bb), accumulates dwd and du, and
// leaves q̃_t = gy_t / (e1·bb + e2) (so q_t = q̃_t e^{-P_t}) in dk and P_t in dv. Pass 2 (t descending) keeps G, H
// scaled by e^{-s}, s the running maximum of their exponents (t-1-i)·wd - P_t; since P_t >= k_i + (t-1-i)·wd for
// every i < t, the factors e^{k_i + s} and e^{u + k_i - P_i} never exceed 1.
// dwd and du are written per (b, c) and summed over b afterwards (no races between work items).
#include "cerebra/ops/wkv.h"

#include <ATen/record_function.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cerebra/core/flop_counter.h"
#include "simd.h"

namespace cerebra::ops {

namespace {

using simd::Pack;
using torch::Tensor;

// Exponent of an empty sum: below any real exponent, finite so that differences stay finite (wkv_cuda.cu's MIN_VALUE).
constexpr double kMinExponent = -1e38;

// Multiply-adds per (b, t, c): wkv_flops = 2·kForwardMacs·B·T·C; see the file comment of wkv.h.
constexpr double kForwardMacs = 6.0;
constexpr double kBackwardMacs = 21.0;

template <typename T>
struct Wkv {
  const T* wd;  // (C): -exp(w)
  const T* u;   // (C)
  const T* k;   // (B, T, C)
  const T* v;   // (B, T, C)
  int64_t B, T_, C;
};

template <typename T>
struct WkvGrad {
  const T* y;   // (B, T, C)
  const T* gy;  // (B, T, C)
  T* gwd;       // (B, C): per-b partials
  T* gu;        // (B, C): per-b partials
  T* gk;        // (B, T, C)
  T* gv;        // (B, T, C)
};

// ea = e^{a - max(a, b)}, eb = e^{b - max(a, b)}, m = max(a, b), with one exp.
template <typename P, typename V>
CEREBRA_INLINE void exp_pair(const V& a, const V& b, V& m, V& ea, V& eb) {
  const V d = a - b;
  const V one = P::set1(1), neg = d > 0 ? -d : d;
  const V e = P::exp(neg);
  m = d > 0 ? a : b;
  ea = d > 0 ? one : e;
  eb = d > 0 ? e : one;
}

// One forward step of W channels: c = channel, o = offset into k, v, y; aa, bb, pp = the channels' state.
template <typename T, int W>
CEREBRA_INLINE void forward_lanes(const Wkv<T>& s, int64_t c, int64_t o, T* aa, T* bb, T* pp, T* y) {
  using P = Pack<T, W>;
  using V = typename P::V;
  const V kk = P::load(s.k + o), vv = P::load(s.v + o), a = P::load(aa), b = P::load(bb), p0 = P::load(pp);
  V p, e1, e2;
  exp_pair<P>(p0, P::load(s.u + c) + kk, p, e1, e2);
  P::store(y + o, (e1 * a + e2 * vv) / (e1 * b + e2));
  exp_pair<P>(P::load(s.wd + c) + p0, kk, p, e1, e2);
  P::store(aa, e1 * a + e2 * vv);
  P::store(bb, e1 * b + e2);
  P::store(pp, p);
}

// Backward pass 1 step (see the file comment): state aa, bb, pp, derivative sums da, db, accumulators gw, gu.
template <typename T, int W>
CEREBRA_INLINE void backward_lanes_1(const Wkv<T>& s, const WkvGrad<T>& g, int64_t c, int64_t o, T* aa, T* bb,
                                     T* pp, T* da, T* db, T* gw, T* gu) {
  using P = Pack<T, W>;
  using V = typename P::V;
  const V kk = P::load(s.k + o), vv = P::load(s.v + o), yy = P::load(g.y + o);
  const V a = P::load(aa), b = P::load(bb), p0 = P::load(pp), dav = P::load(da), dbv = P::load(db);
  V p, e1, e2;
  exp_pair<P>(p0, P::load(s.u + c) + kk, p, e1, e2);
  const V q = P::load(g.gy + o) / (e1 * b + e2);
  P::store(gw, P::load(gw) + q * e1 * (dav - yy * dbv));
  P::store(gu, P::load(gu) + q * e2 * (vv - yy));
  P::store(g.gk + o, q);
  P::store(g.gv + o, p);
  exp_pair<P>(P::load(s.wd + c) + p0, kk, p, e1, e2);
  P::store(da, e1 * (dav + a));
  P::store(db, e1 * (dbv + b));
  P::store(aa, e1 * a + e2 * vv);
  P::store(bb, e1 * b + e2);
  P::store(pp, p);
}

// Backward pass 2 step: adjoint sums G, H scaled by e^{-sc}; reads q̃, P from gk, gv and overwrites them.
template <typename T, int W>
CEREBRA_INLINE void backward_lanes_2(const Wkv<T>& s, const WkvGrad<T>& g, int64_t c, int64_t o, T* G, T* H,
                                     T* sc) {
  using P = Pack<T, W>;
  using V = typename P::V;
  const V kk = P::load(s.k + o), vv = P::load(s.v + o), yy = P::load(g.y + o);
  const V q = P::load(g.gk + o), Pt = P::load(g.gv + o), Gv = P::load(G), Hv = P::load(H), s0 = P::load(sc);
  const V qe = q * P::exp(P::load(s.u + c) + kk - Pt);  // q_t e^{u + k_t}, exponent <= 0
  const V ek = P::exp(kk + s0);                          // e^{k_t} (G, H scale), exponent <= 0
  P::store(g.gk + o, qe * (vv - yy) + ek * (vv * Gv - Hv));
  P::store(g.gv + o, qe + ek * Gv);
  V s2, f1, f2;
  exp_pair<P>(P::load(s.wd + c) + s0, -Pt, s2, f1, f2);
  const V qs = f2 * q;
  P::store(G, f1 * Gv + qs);
  P::store(H, f1 * Hv + qs * yy);
  P::store(sc, s2);
}

// Work items: (b, range of channels). Every step reads a contiguous row segment of k, v, y (the hardware prefetcher
// follows it from one step to the next), and the channels of a range are independent recurrences that the CPU
// overlaps. Ranges start at multiples of 8, so whether a channel runs on the vector path or the scalar tail does not
// depend on the partition (results do not depend on the thread count).
struct Ranges {
  int64_t size, count;
};

Ranges channel_ranges(int64_t B, int64_t C) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t count = std::max<int64_t>(1, std::min<int64_t>((C + 63) / 64, (2 * threads + B - 1) / B));
  const int64_t size = ((C + count - 1) / count + 7) / 8 * 8;
  count = (C + size - 1) / size;
  return {size, count};
}

// Scratch per range: 7 values per channel (backward pass 1; the forward uses 3).
constexpr int64_t kScratchPerChannel = 7;

template <typename T, int W>
CEREBRA_INLINE void forward_items(const Wkv<T>& s, const Ranges& r, int64_t begin, int64_t end, T* y) {
  std::vector<T> scratch(kScratchPerChannel * r.size);
  for (int64_t it = begin; it < end; ++it) {
    const int64_t b = it / r.count, c0 = (it % r.count) * r.size, n = std::min(s.C, c0 + r.size) - c0;
    const int64_t full = (n / W) * W;
    T *aa = scratch.data(), *bb = aa + n, *pp = bb + n;
    std::fill(aa, aa + 2 * n, T(0));
    std::fill(pp, pp + n, static_cast<T>(kMinExponent));
    for (int64_t t = 0; t < s.T_; ++t) {
      const int64_t o = (b * s.T_ + t) * s.C + c0;
      for (int64_t j = 0; j < full; j += W) forward_lanes<T, W>(s, c0 + j, o + j, aa + j, bb + j, pp + j, y);
      for (int64_t j = full; j < n; ++j) forward_lanes<T, 1>(s, c0 + j, o + j, aa + j, bb + j, pp + j, y);
    }
  }
}

template <typename T, int W>
CEREBRA_INLINE void backward_items(const Wkv<T>& s, const WkvGrad<T>& g, const Ranges& r, int64_t begin,
                                   int64_t end) {
  std::vector<T> scratch(kScratchPerChannel * r.size);
  for (int64_t it = begin; it < end; ++it) {
    const int64_t b = it / r.count, c0 = (it % r.count) * r.size, n = std::min(s.C, c0 + r.size) - c0;
    const int64_t full = (n / W) * W;
    T *aa = scratch.data(), *bb = aa + n, *pp = bb + n, *da = pp + n, *db = da + n, *gw = db + n, *gu = gw + n;
    std::fill(aa, aa + 2 * n, T(0));
    std::fill(pp, pp + n, static_cast<T>(kMinExponent));
    std::fill(da, da + 4 * n, T(0));
    for (int64_t t = 0; t < s.T_; ++t) {
      const int64_t o = (b * s.T_ + t) * s.C + c0;
      for (int64_t j = 0; j < full; j += W)
        backward_lanes_1<T, W>(s, g, c0 + j, o + j, aa + j, bb + j, pp + j, da + j, db + j, gw + j, gu + j);
      for (int64_t j = full; j < n; ++j)
        backward_lanes_1<T, 1>(s, g, c0 + j, o + j, aa + j, bb + j, pp + j, da + j, db + j, gw + j, gu + j);
    }
    std::copy(gw, gw + n, g.gwd + b * s.C + c0);
    std::copy(gu, gu + n, g.gu + b * s.C + c0);
    T *G = aa, *H = bb, *sc = pp;
    std::fill(G, G + 2 * n, T(0));
    std::fill(sc, sc + n, static_cast<T>(kMinExponent));
    for (int64_t t = s.T_ - 1; t >= 0; --t) {
      const int64_t o = (b * s.T_ + t) * s.C + c0;
      for (int64_t j = 0; j < full; j += W) backward_lanes_2<T, W>(s, g, c0 + j, o + j, G + j, H + j, sc + j);
      for (int64_t j = full; j < n; ++j) backward_lanes_2<T, 1>(s, g, c0 + j, o + j, G + j, H + j, sc + j);
    }
  }
}

CEREBRA_TARGET_AVX2 void forward_items_avx2(const Wkv<float>& s, const Ranges& r, int64_t begin, int64_t end,
                                            float* y) {
  forward_items<float, simd::lanes<float>(true)>(s, r, begin, end, y);
}

CEREBRA_TARGET_AVX2 void backward_items_avx2(const Wkv<float>& s, const WkvGrad<float>& g, const Ranges& r,
                                             int64_t begin, int64_t end) {
  backward_items<float, simd::lanes<float>(true)>(s, g, r, begin, end);
}

template <typename T>
void forward_items_any(const Wkv<T>& s, const Ranges& r, int64_t begin, int64_t end, T* y) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return forward_items_avx2(s, r, begin, end, y);
  }
  forward_items<T, simd::lanes<T>(false)>(s, r, begin, end, y);
}

template <typename T>
void backward_items_any(const Wkv<T>& s, const WkvGrad<T>& g, const Ranges& r, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return backward_items_avx2(s, g, r, begin, end);
  }
  backward_items<T, simd::lanes<T>(false)>(s, g, r, begin, end);
}

template <typename T>
Wkv<T> describe(const Tensor& wd, const Tensor& u, const Tensor& k, const Tensor& v) {
  return Wkv<T>{wd.data_ptr<T>(), u.data_ptr<T>(), k.data_ptr<T>(), v.data_ptr<T>(), k.size(0), k.size(1), k.size(2)};
}

// wd, u: (C), k, v: (B, T, C), contiguous -> y: (B, T, C)
Tensor forward_kernel(const Tensor& wd, const Tensor& u, const Tensor& k, const Tensor& v) {
  const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
  auto y = torch::empty_like(k);
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_forward", [&] {
    const auto s = describe<scalar_t>(wd, u, k, v);
    const Ranges r = channel_ranges(B, C);
    scalar_t* py = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * r.count, 1, [&](int64_t b, int64_t e) { forward_items_any(s, r, b, e, py); });
  });
  add_kernel_flops("wkv", 2.0 * kForwardMacs * B * T * C);
  return y;
}

// -> {dwd (C), du (C), dk, dv (B, T, C)}
std::vector<Tensor> backward_kernel(const Tensor& wd, const Tensor& u, const Tensor& k, const Tensor& v,
                                    const Tensor& y, const Tensor& gy) {
  const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
  auto gk = torch::empty_like(k), gv = torch::empty_like(k);
  auto gwd = torch::empty({B, C}, k.options()), gu = torch::empty({B, C}, k.options());
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_backward", [&] {
    const auto s = describe<scalar_t>(wd, u, k, v);
    const WkvGrad<scalar_t> g{y.data_ptr<scalar_t>(),   gy.data_ptr<scalar_t>(), gwd.data_ptr<scalar_t>(),
                              gu.data_ptr<scalar_t>(),  gk.data_ptr<scalar_t>(), gv.data_ptr<scalar_t>()};
    const Ranges r = channel_ranges(B, C);
    at::parallel_for(0, B * r.count, 1, [&](int64_t b, int64_t e) { backward_items_any(s, g, r, b, e); });
  });
  add_kernel_flops("wkv", 2.0 * kBackwardMacs * B * T * C);
  return {gwd.sum(0), gu.sum(0), gk, gv};
}

struct WkvFunction : public torch::autograd::Function<WkvFunction> {
  // wd, u: (C), k, v: (B, T, C) -> {y: (B, T, C)}
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& wd,
                                                const Tensor& u, const Tensor& k, const Tensor& v) {
    RECORD_FUNCTION("cerebra::wkv", std::vector<c10::IValue>());  // named in profiles (bench layers --breakdown)
    auto wdc = wd.contiguous(), uc = u.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    auto y = forward_kernel(wdc, uc, kc, vc);
    ctx->save_for_backward({wdc, uc, kc, vc, y});
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor(), Tensor()};
    return backward_kernel(s[0], s[1], s[2], s[3], s[4], grads[0].contiguous());
  }
};

void check_inputs(const char* op, const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v) {
  TORCH_CHECK(k.dim() == 3, op, ": k must be (B, T, C), got ", k.sizes());
  const int64_t C = k.size(2);
  TORCH_CHECK(v.sizes() == k.sizes(), op, ": v must be (B, T, C) = ", k.sizes(), " like k, got ", v.sizes());
  TORCH_CHECK(w.dim() == 1 && w.size(0) == C, op, ": w must be (C) = (", C, "), got ", w.sizes());
  TORCH_CHECK(u.dim() == 1 && u.size(0) == C, op, ": u must be (C) = (", C, "), got ", u.sizes());
  TORCH_CHECK(k.is_floating_point(), op, ": floating tensors expected, got ", k.scalar_type());
  for (const Tensor* t : {&w, &u, &v})
    TORCH_CHECK(t->scalar_type() == k.scalar_type(), op, ": every tensor must have k's dtype ", k.scalar_type(),
                ", got ", t->scalar_type());
}

// One step of the recurrence in torch ops (shared by wkv_ref and wkv_step): wd, u (C), k, v (B, C) -> y (B, C).
Tensor step(const Tensor& wd, const Tensor& u, const Tensor& k, const Tensor& v, WkvState& st) {
  auto ww = u + k;
  auto p = torch::maximum(st.pp, ww);
  auto e1 = torch::exp(st.pp - p), e2 = torch::exp(ww - p);
  auto y = (e1 * st.aa + e2 * v) / (e1 * st.bb + e2);
  ww = wd + st.pp;
  p = torch::maximum(ww, k);
  e1 = torch::exp(ww - p);
  e2 = torch::exp(k - p);
  st.aa = e1 * st.aa + e2 * v;
  st.bb = e1 * st.bb + e2;
  st.pp = p;
  return y;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

Tensor wkv(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v) {
  check_inputs("wkv", w, u, k, v);
  TORCH_CHECK(k.scalar_type() == torch::kFloat || k.scalar_type() == torch::kDouble,
              "wkv: float32 or float64 expected, got ", k.scalar_type());
  TORCH_CHECK(k.device().is_cpu(), "wkv: CPU tensors expected, got ", k.device());
  if (k.numel() == 0) return torch::zeros_like(k) + (w.sum() + u.sum()) * 0;
  return WkvFunction::apply(-torch::exp(w), u, k, v)[0];
}

Tensor wkv_ref(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v) {
  check_inputs("wkv_ref", w, u, k, v);
  const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
  const auto wd = -torch::exp(w);
  auto st = wkv_initial_state(B, C, k.options());
  // unbind, not select: one backward node for all steps.
  const auto ks = k.unbind(1), vs = v.unbind(1);
  std::vector<Tensor> ys;
  ys.reserve(T);
  for (int64_t t = 0; t < T; ++t) ys.push_back(step(wd, u, ks[t], vs[t], st));
  add_kernel_flops("wkv_ref", wkv_flops(B, T, C));
  return T > 0 ? torch::stack(ys, 1) : torch::zeros_like(k);
}

WkvState wkv_initial_state(int64_t B, int64_t C, const torch::TensorOptions& options) {
  return {torch::zeros({B, C}, options), torch::zeros({B, C}, options),
          torch::full({B, C}, kMinExponent, options)};
}

Tensor wkv_step(const Tensor& w, const Tensor& u, const Tensor& k, const Tensor& v, WkvState& state) {
  TORCH_CHECK(k.dim() == 2 && v.sizes() == k.sizes(), "wkv_step: k, v must be (B, C), got ", k.sizes(), " and ",
              v.sizes());
  TORCH_CHECK(w.dim() == 1 && u.dim() == 1 && w.size(0) == k.size(1) && u.size(0) == k.size(1),
              "wkv_step: w, u must be (C) = (", k.size(1), "), got ", w.sizes(), " and ", u.sizes());
  TORCH_CHECK(state.aa.sizes() == k.sizes() && state.bb.sizes() == k.sizes() && state.pp.sizes() == k.sizes(),
              "wkv_step: the state must be (B, C) = ", k.sizes(), " (see wkv_initial_state)");
  return step(-torch::exp(w), u, k, v, state);
}

}  // namespace cerebra::ops
