// Selective scan (Mamba S6) on the CPU beside its reference; see include/cerebra/ops/selective_scan.h.
//
// selective_scan = element-wise prologue and epilogue in torch ops (dt = softplus(delta + delta_bias), y *= silu(z);
// vectorised by ATen and differentiated by autograd) around the scan kernel proper, an autograd function of
// (u, dt, A, B, C, Dskip). Keeping the transcendental per-step work (softplus, sigmoid) out of the kernel's
// sequential loop leaves it only the per-(l, n) recurrence.
// Layout: u, dt are read as (B, D, L) (one contiguous row per (b, d)), A as (D, N), and B, C are transposed once to
// (B, L, N) so that the N values of a step are contiguous: the loops over n run W lanes at a time (8 floats with
// AVX2, see simd.h).
// Forward, one work item per (b, d), parallel over B·D, chunk by chunk (`chunk` steps): first the chunk's decays
// a = exp(dt·A) in one pass (independent of each other, so at the exp's throughput rather than its latency), then
// the recurrence over the chunk's steps with the state x in registers (N = 1, 2 or 4 vectors: 8, 16, 32 floats with
// AVX2) or in L1 (any other N). The state at the start of every chunk is kept: (B, D, n_chunks, N).
// Backward, per (b, d), chunks from last to first: recompute the chunk's decays and states from its start state into
// (chunk, N) buffers, then walk the chunk backwards with the adjoint h = dL/dx_l (in registers like the state):
//   h_l = a_{l+1} ∘ h_{l+1} + dy_l · C_l            (+ d last_state at l = L-1)
//   dC_l += dy_l · x_l,   dB_l += dt_l u_l · h_l,   dA += dt_l · (h_l ∘ x_{l-1} ∘ a_l)
//   d dt_l = Σ_n h_l x_{l-1} a_l A + u_l Σ_n h_l B_l,   du_l = Dskip · dy_l + dt_l Σ_n h_l B_l
// Sums over d (dB, dC) and over b (dA, dDskip) would race between work items. Work items are therefore
// (b, group of channels d); each group adds dB, dC into its own (B, L, N) buffer (a single group unless B is not a
// multiple of the thread count), and dA, dDskip are written per (b, d) and summed over b afterwards.
#include "cerebra/ops/selective_scan.h"

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

// ---------------------------------------------------------------------------------------------------------------
// Problem description (raw pointers into contiguous tensors).

template <typename T>
struct Scan {
  const T* u;      // (B, D, L)
  const T* dt;     // (B, D, L): the step sizes, after bias and softplus
  const T* A;      // (D, N)
  const T* Bt;     // (B, L, N)
  const T* Ct;     // (B, L, N)
  const T* Dskip;  // (D) or nullptr
  int64_t B, D, L, N, chunk;

  int64_t chunks() const { return (L + chunk - 1) / chunk; }
  int64_t row(int64_t b, int64_t d) const { return (b * D + d) * L; }
  T skip(int64_t d) const { return Dskip ? Dskip[d] : T(0); }
};

// Multiply-adds per (b, d, l, n), as documented in the header (selective_scan_flops = 2·kForwardMacs·B·D·L·N).
constexpr double kForwardMacs = 4.0;
constexpr double kBackwardMacs = 12.0;

double scan_elements(int64_t B, int64_t D, int64_t L, int64_t N) {
  return static_cast<double>(B) * static_cast<double>(D) * static_cast<double>(L) * static_cast<double>(N);
}

// ---------------------------------------------------------------------------------------------------------------
// One block of W states (W = 1: one state, used for the tails and for doubles).

template <typename T, int W>
struct Block {
  using P = Pack<T, W>;
  using V = typename P::V;

  // Forward step: x = a·x + (dt·u)·B, with the decay a = exp(dt·A) computed beforehand (see decays()).
  static CEREBRA_INLINE void step(V& x, const T* a, const V& dtu, const T* B) { x = P::load(a) * x + dtu * P::load(B); }

  // Adjoint step at l (see the file comment): h += dy·C_l; dC_l += dy·x_l; with ga = h·x_{l-1}·a_l: gaA += ga·A,
  // dA += ga·dt; hB += h·B_l; dB_l += h·dt·u; then h = a_l·h for step l - 1.
  static CEREBRA_INLINE void adjoint(V& h, V& dA, V& gaA, V& hB, const V& A, const V& dy, const V& dt, const V& dtu,
                                     const T* a, const T* x, const T* x_prev, const T* B, const T* C, T* dB, T* dC) {
    const V av = P::load(a);
    const V hv = h + dy * P::load(C);
    P::store(dC, P::load(dC) + dy * P::load(x));
    const V ga = hv * P::load(x_prev) * av;
    gaA += ga * A;
    dA += ga * dt;
    hB += hv * P::load(B);
    P::store(dB, P::load(dB) + hv * dtu);
    h = av * hv;
  }
};

// NV > 0: N = NV·W states held in registers for the whole row (the recurrence then never waits on a store-to-load
// round trip); NV = 0: any N, kept in memory, W lanes at a time and a scalar tail.
constexpr int kMaxRegisterBlocks = 4;

template <int W>
int register_blocks(int64_t N) {
  if (W == 1 || N % W != 0) return 0;
  const int64_t nv = N / W;
  return (nv == 1 || nv == 2 || nv == 4) ? static_cast<int>(nv) : 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Decays a[t][n] = exp(dt_{l0+t} · A[n]) of one chunk, written to a (nt x N) buffer before the recurrence runs: the
// exps of all steps are independent, so this pass runs at exp throughput, while inside the recurrence their latency
// would stall every step.

template <typename T, int W>
CEREBRA_INLINE void decays(const T* dt, const T* A, int64_t nt, int64_t N, T* a) {
  using P = Pack<T, W>;
  const int64_t full = (N / W) * W;
  for (int64_t t = 0; t < nt; ++t, a += N) {
    const auto vdt = P::set1(dt[t]);
    for (int64_t n = 0; n < full; n += W) P::store(a + n, P::exp(vdt * P::load(A + n)));
    for (int64_t n = full; n < N; ++n) a[n] = std::exp(dt[t] * A[n]);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward of one (b, d). Scratch: x (N), a (chunk x N).

template <typename T, int W, int NV>
CEREBRA_INLINE void forward_bd(const Scan<T>& s, int64_t b, int64_t d, T* x, T* a, T* y, T* last, T* states) {
  using Bk = Block<T, W>;
  using P = typename Bk::P;
  using V = typename Bk::V;
  const int64_t N = s.N, row = s.row(b, d), full = (N / W) * W;
  const T* u = s.u + row;
  const T* dts = s.dt + row;
  const T* A = s.A + d * N;
  const T* Bb = s.Bt + b * s.L * N;
  const T* Cb = s.Ct + b * s.L * N;
  const T skip = s.skip(d);
  T* st = states + (b * s.D + d) * s.chunks() * N;
  V xr[kMaxRegisterBlocks];
  for (int i = 0; i < NV; ++i) xr[i] = P::set1(0);
  std::fill(x, x + N, T(0));
  for (int64_t c = 0; c < s.chunks(); ++c) {
    const int64_t l0 = c * s.chunk, nt = std::min(s.chunk, s.L - l0);
    for (int i = 0; i < NV; ++i) P::store(x + i * W, xr[i]);
    std::copy(x, x + N, st + c * N);  // state at the chunk start, for the backward
    decays<T, W>(dts + l0, A, nt, N, a);
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t l = l0 + t;
      const T dtu = dts[l] * u[l];
      const T* at = a + t * N;
      const T* Bl = Bb + l * N;
      const T* Cl = Cb + l * N;
      const V vdtu = P::set1(dtu);
      V acc = P::set1(0);
      if constexpr (NV > 0) {
        for (int i = 0; i < NV; ++i) {
          Bk::step(xr[i], at + i * W, vdtu, Bl + i * W);
          acc += P::load(Cl + i * W) * xr[i];
        }
      } else {
        for (int64_t n = 0; n < full; n += W) {
          V xv = P::load(x + n);
          Bk::step(xv, at + n, vdtu, Bl + n);
          P::store(x + n, xv);
          acc += P::load(Cl + n) * xv;
        }
      }
      T yl = P::hsum(acc);
      for (int64_t n = full; n < N; ++n) {
        Block<T, 1>::step(x[n], at + n, dtu, Bl + n);
        yl += Cl[n] * x[n];
      }
      y[row + l] = yl + skip * u[l];
    }
  }
  for (int i = 0; i < NV; ++i) P::store(x + i * W, xr[i]);
  std::copy(x, x + N, last + (b * s.D + d) * N);
}

template <typename T, int W>
CEREBRA_INLINE void forward_rows(const Scan<T>& s, int64_t begin, int64_t end, T* y, T* last, T* states) {
  std::vector<T> x(s.N), a(s.chunk * s.N);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t b = i / s.D, d = i % s.D;
    switch (register_blocks<W>(s.N)) {
      case 1: forward_bd<T, W, 1>(s, b, d, x.data(), a.data(), y, last, states); break;
      case 2: forward_bd<T, W, 2>(s, b, d, x.data(), a.data(), y, last, states); break;
      case 4: forward_bd<T, W, 4>(s, b, d, x.data(), a.data(), y, last, states); break;
      default: forward_bd<T, W, 0>(s, b, d, x.data(), a.data(), y, last, states); break;
    }
  }
}

CEREBRA_TARGET_AVX2 void forward_rows_avx2(const Scan<float>& s, int64_t begin, int64_t end, float* y, float* last,
                                           float* states) {
  forward_rows<float, simd::lanes<float>(true)>(s, begin, end, y, last, states);
}

template <typename T>
void forward_rows_any(const Scan<T>& s, int64_t begin, int64_t end, T* y, T* last, T* states) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return forward_rows_avx2(s, begin, end, y, last, states);
  }
  forward_rows<T, simd::lanes<T>(false)>(s, begin, end, y, last, states);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward of one (b, d).

template <typename T>
struct ScanGrad {
  const T* dy;      // (B, D, L)
  const T* dlast;   // (B, D, N) or nullptr
  const T* states;  // (B, D, n_chunks, N): state at each chunk start
  T* du;            // (B, D, L)
  T* ddt;           // (B, D, L)
  T* dA;            // (B, D, N): per-b partials
  T* dskip;         // (B, D): per-b partials
  T* dBt;           // (groups, B, L, N)
  T* dCt;           // (groups, B, L, N)
  int64_t groups;
};

// Scratch for one thread: states X and decays a of a chunk (chunk x N each), adjoint h and the chunk's dA sum
// (N each), and the running dA total in double (N): sums over L are taken per chunk, then across chunks, so float
// rounding grows with chunk + L/chunk terms rather than L.
template <typename T>
struct BackwardScratch {
  std::vector<T> buf;
  std::vector<double> dA_total;
  T *X, *a, *h, *dA;
  BackwardScratch(int64_t chunk, int64_t N) : buf(2 * chunk * N + 2 * N), dA_total(N) {
    X = buf.data();
    a = X + chunk * N;
    h = a + chunk * N;
    dA = h + N;
  }
};

template <typename T, int W, int NV>
CEREBRA_INLINE void backward_bd(const Scan<T>& s, const ScanGrad<T>& g, int64_t b, int64_t d, int64_t group,
                                BackwardScratch<T>& w) {
  using Bk = Block<T, W>;
  using P = typename Bk::P;
  using V = typename Bk::V;
  const int64_t N = s.N, row = s.row(b, d), bd = b * s.D + d, full = (N / W) * W;
  const T* u = s.u + row;
  const T* dts = s.dt + row;
  const T* A = s.A + d * N;
  const T* Bb = s.Bt + b * s.L * N;
  const T* Cb = s.Ct + b * s.L * N;
  const T* st = g.states + bd * s.chunks() * N;
  T* dBb = g.dBt + (group * s.B + b) * s.L * N;
  T* dCb = g.dCt + (group * s.B + b) * s.L * N;
  const T skip = s.skip(d);
  if (g.dlast)
    std::copy(g.dlast + bd * N, g.dlast + (bd + 1) * N, w.h);
  else
    std::fill(w.h, w.h + N, T(0));
  std::fill(w.dA_total.begin(), w.dA_total.end(), 0.0);
  double dskip = 0;
  V hr[kMaxRegisterBlocks], dAr[kMaxRegisterBlocks], Ar[kMaxRegisterBlocks];
  for (int i = 0; i < NV; ++i) hr[i] = P::load(w.h + i * W), Ar[i] = P::load(A + i * W);

  for (int64_t c = s.chunks() - 1; c >= 0; --c) {
    const int64_t l0 = c * s.chunk, nt = std::min(s.chunk, s.L - l0);
    const T* x0 = st + c * N;
    // Recompute the chunk: a[t] = exp(dt·A), X[t] = state after step l0 + t.
    decays<T, W>(dts + l0, A, nt, N, w.a);
    V xr[kMaxRegisterBlocks];
    for (int i = 0; i < NV; ++i) xr[i] = P::load(x0 + i * W);
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t l = l0 + t;
      const T dtu = dts[l] * u[l];
      const T* xp = t > 0 ? w.X + (t - 1) * N : x0;
      T* Xt = w.X + t * N;
      const T* at = w.a + t * N;
      const T* Bl = Bb + l * N;
      const V vdtu = P::set1(dtu);
      if constexpr (NV > 0) {
        for (int i = 0; i < NV; ++i) {
          Bk::step(xr[i], at + i * W, vdtu, Bl + i * W);
          P::store(Xt + i * W, xr[i]);
        }
      } else {
        for (int64_t n = 0; n < full; n += W) {
          V xv = P::load(xp + n);
          Bk::step(xv, at + n, vdtu, Bl + n);
          P::store(Xt + n, xv);
        }
      }
      for (int64_t n = full; n < N; ++n) {
        Xt[n] = xp[n];
        Block<T, 1>::step(Xt[n], at + n, dtu, Bl + n);
      }
    }
    // Adjoint, backwards through the chunk.
    for (int i = 0; i < NV; ++i) dAr[i] = P::set1(0);
    std::fill(w.dA, w.dA + N, T(0));
    T dskip_chunk = 0;
    for (int64_t t = nt - 1; t >= 0; --t) {
      const int64_t l = l0 + t;
      const T dt = dts[l], ul = u[l], dtu = dt * ul, dy = g.dy[row + l];
      dskip_chunk += dy * ul;
      const T* Xt = w.X + t * N;
      const T* xp = t > 0 ? w.X + (t - 1) * N : x0;
      const T* at = w.a + t * N;
      const T* Bl = Bb + l * N;
      const T* Cl = Cb + l * N;
      T* dBl = dBb + l * N;
      T* dCl = dCb + l * N;
      const V vdy = P::set1(dy), vdt = P::set1(dt), vdtu = P::set1(dtu);
      V gaA = P::set1(0), hB = P::set1(0);  // lane sums of h·x_{l-1}·a·A and h·B
      if constexpr (NV > 0) {
        for (int i = 0; i < NV; ++i) {
          const int64_t n = i * W;
          Bk::adjoint(hr[i], dAr[i], gaA, hB, Ar[i], vdy, vdt, vdtu, at + n, Xt + n, xp + n, Bl + n, Cl + n, dBl + n,
                      dCl + n);
        }
      } else {
        for (int64_t n = 0; n < full; n += W) {
          V hv = P::load(w.h + n), dAv = P::load(w.dA + n);
          Bk::adjoint(hv, dAv, gaA, hB, P::load(A + n), vdy, vdt, vdtu, at + n, Xt + n, xp + n, Bl + n, Cl + n, dBl + n,
                      dCl + n);
          P::store(w.h + n, hv);
          P::store(w.dA + n, dAv);
        }
      }
      T s_gaA = P::hsum(gaA), s_hB = P::hsum(hB);
      for (int64_t n = full; n < N; ++n) {
        Block<T, 1>::adjoint(w.h[n], w.dA[n], s_gaA, s_hB, A[n], dy, dt, dtu, at + n, Xt + n, xp + n, Bl + n, Cl + n,
                             dBl + n, dCl + n);
      }
      g.du[row + l] = dy * skip + s_hB * dt;
      g.ddt[row + l] = s_gaA + s_hB * ul;
    }
    for (int i = 0; i < NV; ++i) P::store(w.dA + i * W, dAr[i]);
    for (int64_t n = 0; n < N; ++n) w.dA_total[n] += w.dA[n];
    dskip += dskip_chunk;
  }
  for (int64_t n = 0; n < N; ++n) g.dA[bd * N + n] = static_cast<T>(w.dA_total[n]);
  g.dskip[bd] = static_cast<T>(dskip);
}

// Work item t = (b, group): channels [group·D/groups, (group+1)·D/groups) of batch b.
template <typename T, int W>
CEREBRA_INLINE void backward_items(const Scan<T>& s, const ScanGrad<T>& g, int64_t begin, int64_t end) {
  BackwardScratch<T> w(s.chunk, s.N);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t b = t / g.groups, group = t % g.groups;
    const int64_t d0 = group * s.D / g.groups, d1 = (group + 1) * s.D / g.groups;
    for (int64_t d = d0; d < d1; ++d) {
      switch (register_blocks<W>(s.N)) {
        case 1: backward_bd<T, W, 1>(s, g, b, d, group, w); break;
        case 2: backward_bd<T, W, 2>(s, g, b, d, group, w); break;
        case 4: backward_bd<T, W, 4>(s, g, b, d, group, w); break;
        default: backward_bd<T, W, 0>(s, g, b, d, group, w); break;
      }
    }
  }
}

CEREBRA_TARGET_AVX2 void backward_items_avx2(const Scan<float>& s, const ScanGrad<float>& g, int64_t begin,
                                             int64_t end) {
  backward_items<float, simd::lanes<float>(true)>(s, g, begin, end);
}

template <typename T>
void backward_items_any(const Scan<T>& s, const ScanGrad<T>& g, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    if (simd::cpu_has_avx2()) return backward_items_avx2(s, g, begin, end);
  }
  backward_items<T, simd::lanes<T>(false)>(s, g, begin, end);
}

// ---------------------------------------------------------------------------------------------------------------
// Drivers on contiguous tensors.

struct ScanTensors {
  Tensor u, dt, A, Bt, Ct, Dskip;  // Bt, Ct: (B, L, N); Dskip may be undefined
};

template <typename T>
Scan<T> describe(const ScanTensors& t, int64_t chunk) {
  return Scan<T>{t.u.data_ptr<T>(),
                 t.dt.data_ptr<T>(),
                 t.A.data_ptr<T>(),
                 t.Bt.data_ptr<T>(),
                 t.Ct.data_ptr<T>(),
                 t.Dskip.defined() ? t.Dskip.data_ptr<T>() : nullptr,
                 t.u.size(0),
                 t.u.size(1),
                 t.u.size(2),
                 t.A.size(1),
                 chunk};
}

// -> y: (B, D, L) (before any gate), last_state: (B, D, N), chunk states: (B, D, n_chunks, N)
std::tuple<Tensor, Tensor, Tensor> forward_kernel(const ScanTensors& t, int64_t chunk) {
  const int64_t B = t.u.size(0), D = t.u.size(1), L = t.u.size(2), N = t.A.size(1);
  auto y = torch::empty_like(t.u);
  auto last = torch::empty({B, D, N}, t.u.options());
  auto states = torch::empty({B, D, (L + chunk - 1) / chunk, N}, t.u.options());
  AT_DISPATCH_FLOATING_TYPES(t.u.scalar_type(), "selective_scan_forward", [&] {
    const auto s = describe<scalar_t>(t, chunk);
    scalar_t *py = y.data_ptr<scalar_t>(), *pl = last.data_ptr<scalar_t>(), *ps = states.data_ptr<scalar_t>();
    at::parallel_for(0, B * D, 1, [&](int64_t b, int64_t e) { forward_rows_any(s, b, e, py, pl, ps); });
  });
  add_kernel_flops("selective_scan", 2.0 * kForwardMacs * scan_elements(B, D, L, N));
  return {y, last, states};
}

// dy: (B, D, L), dlast: (B, D, N) or undefined -> du, ddt, dA, dB (B, N, L), dC (B, N, L), dDskip (or undefined)
std::vector<Tensor> backward_kernel(const ScanTensors& t, const Tensor& states, const Tensor& dy, const Tensor& dlast,
                                    int64_t chunk) {
  const int64_t B = t.u.size(0), D = t.u.size(1), L = t.u.size(2), N = t.A.size(1);
  const int64_t threads = at::get_num_threads();
  const int64_t groups = (B % threads == 0) ? 1 : std::min<int64_t>(threads, D);
  auto du = torch::empty_like(t.u), ddt = torch::empty_like(t.dt);
  auto dA = torch::empty({B, D, N}, t.u.options()), dskip = torch::empty({B, D}, t.u.options());
  auto dBt = torch::zeros({groups, B, L, N}, t.u.options()), dCt = torch::zeros({groups, B, L, N}, t.u.options());
  AT_DISPATCH_FLOATING_TYPES(t.u.scalar_type(), "selective_scan_backward", [&] {
    const auto s = describe<scalar_t>(t, chunk);
    const ScanGrad<scalar_t> g{dy.data_ptr<scalar_t>(),     dlast.defined() ? dlast.data_ptr<scalar_t>() : nullptr,
                               states.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(),
                               ddt.data_ptr<scalar_t>(),    dA.data_ptr<scalar_t>(),
                               dskip.data_ptr<scalar_t>(),  dBt.data_ptr<scalar_t>(),
                               dCt.data_ptr<scalar_t>(),    groups};
    at::parallel_for(0, B * groups, 1, [&](int64_t b, int64_t e) { backward_items_any(s, g, b, e); });
  });
  add_kernel_flops("selective_scan", 2.0 * kBackwardMacs * scan_elements(B, D, L, N));
  auto sum_groups = [&](const Tensor& x) { return (groups == 1 ? x[0] : x.sum(0)).transpose(1, 2); };
  return {du, ddt, dA.sum(0), sum_groups(dBt), sum_groups(dCt), t.Dskip.defined() ? dskip.sum(0) : Tensor()};
}

// ---------------------------------------------------------------------------------------------------------------
// Autograd function of the scan proper. Dskip comes in as c10::optional: autograd functions take no undefined
// tensor inputs.

struct ScanFunction : public torch::autograd::Function<ScanFunction> {
  // u, dt: (B, D, L), A: (D, N), Bm, Cm: (B, N, L), Dskip: (D)? -> {y: (B, D, L), last_state: (B, D, N)}
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& u,
                                                const Tensor& dt, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                                                const c10::optional<Tensor>& Dskip, int64_t chunk) {
    RECORD_FUNCTION("cerebra::selective_scan", std::vector<c10::IValue>());  // named in profiles (bench layers --breakdown)
    ScanTensors t{u.contiguous(),
                  dt.contiguous(),
                  A.contiguous(),
                  Bm.transpose(1, 2).contiguous(),
                  Cm.transpose(1, 2).contiguous(),
                  Dskip.has_value() ? Dskip->contiguous() : Tensor()};
    auto [y, last, states] = forward_kernel(t, chunk);
    ctx->save_for_backward({t.u, t.dt, t.A, t.Bt, t.Ct, t.Dskip, states});
    ctx->saved_data["chunk"] = chunk;
    return {y, last};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto v = ctx->get_saved_variables();
    const ScanTensors t{v[0], v[1], v[2], v[3], v[4], v[5]};
    const Tensor dy = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(t.u);
    const Tensor dlast = grads[1].defined() ? grads[1].contiguous() : Tensor();
    auto g = backward_kernel(t, v[6], dy, dlast, ctx->saved_data["chunk"].toInt());
    g.push_back(Tensor());  // chunk
    return g;
  }
};

void check_inputs(const char* op, const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                  const Tensor& Cm, const Tensor& Dskip, const Tensor& z, const Tensor& delta_bias) {
  TORCH_CHECK(u.dim() == 3, op, ": u must be (B, D, L), got ", u.sizes());
  const int64_t B = u.size(0), D = u.size(1), L = u.size(2);
  TORCH_CHECK(L > 0, op, ": L must be positive, got u ", u.sizes());
  TORCH_CHECK(delta.sizes() == u.sizes(), op, ": delta must be (B, D, L) = ", u.sizes(), " like u, got ",
              delta.sizes());
  TORCH_CHECK(A.dim() == 2 && A.size(0) == D, op, ": A must be (D, N) with D = ", D, ", got ", A.sizes());
  const int64_t N = A.size(1);
  TORCH_CHECK(Bm.dim() == 3 && Bm.size(0) == B && Bm.size(1) == N && Bm.size(2) == L, op, ": Bm must be (B, N, L) = (",
              B, ", ", N, ", ", L, "), got ", Bm.sizes());
  TORCH_CHECK(Cm.sizes() == Bm.sizes(), op, ": Cm must be (B, N, L) = (", B, ", ", N, ", ", L, "), got ", Cm.sizes());
  if (Dskip.defined())
    TORCH_CHECK(Dskip.dim() == 1 && Dskip.size(0) == D, op, ": Dskip must be (D) = (", D, "), got ", Dskip.sizes());
  if (z.defined()) TORCH_CHECK(z.sizes() == u.sizes(), op, ": z must be (B, D, L) = ", u.sizes(), ", got ", z.sizes());
  if (delta_bias.defined())
    TORCH_CHECK(delta_bias.dim() == 1 && delta_bias.size(0) == D, op, ": delta_bias must be (D) = (", D, "), got ",
                delta_bias.sizes());
  for (const Tensor* t : {&u, &delta, &A, &Bm, &Cm, &Dskip, &z, &delta_bias}) {
    if (!t->defined()) continue;
    TORCH_CHECK(t->scalar_type() == u.scalar_type(), op, ": every tensor must have u's dtype ", u.scalar_type(),
                ", got ", t->scalar_type());
  }
  TORCH_CHECK(u.is_floating_point(), op, ": floating tensors expected, got ", u.scalar_type());
}

c10::optional<Tensor> optional_of(const Tensor& t) { return t.defined() ? c10::optional<Tensor>(t) : c10::nullopt; }

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

std::tuple<Tensor, Tensor> selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                          const Tensor& Cm, const Tensor& Dskip, const Tensor& z,
                                          const Tensor& delta_bias, bool delta_softplus, int64_t chunk) {
  check_inputs("selective_scan", u, delta, A, Bm, Cm, Dskip, z, delta_bias);
  TORCH_CHECK(u.scalar_type() == torch::kFloat || u.scalar_type() == torch::kDouble,
              "selective_scan: float32 or float64 expected, got ", u.scalar_type());
  TORCH_CHECK(u.device().is_cpu(), "selective_scan: CPU tensors expected, got ", u.device());
  TORCH_CHECK(chunk > 0, "selective_scan: chunk must be positive, got ", chunk);
  auto dt = delta_bias.defined() ? delta + delta_bias.unsqueeze(-1) : delta;  // (B, D, L)
  if (delta_softplus) dt = torch::softplus(dt);
  auto out = ScanFunction::apply(u, dt, A, Bm, Cm, optional_of(Dskip), chunk);
  auto y = z.defined() ? out[0] * torch::silu(z) : out[0];
  return {y, out[1]};
}

// u, delta: (B, D, L), A: (D, N), Bm, Cm: (B, N, L), Dskip: (D)?, z: (B, D, L)?, delta_bias: (D)?
// -> {y: (B, D, L), last_state: (B, D, N)}
std::tuple<Tensor, Tensor> selective_scan_ref(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                              const Tensor& Cm, const Tensor& Dskip, const Tensor& z,
                                              const Tensor& delta_bias, bool delta_softplus) {
  check_inputs("selective_scan_ref", u, delta, A, Bm, Cm, Dskip, z, delta_bias);
  const int64_t B = u.size(0), D = u.size(1), L = u.size(2), N = A.size(1);
  auto dt = delta_bias.defined() ? delta + delta_bias.unsqueeze(-1) : delta;  // (B, D, L)
  if (delta_softplus) dt = torch::softplus(dt);
  const auto decay = torch::exp(dt.unsqueeze(-1) * A.unsqueeze(1)).unbind(2);               // L x (B, D, N)
  const auto input = ((dt * u).unsqueeze(-1) * Bm.transpose(1, 2).unsqueeze(1)).unbind(2);  // L x (B, D, N)
  const auto C = Cm.unsqueeze(1).unbind(3);                                                 // L x (B, 1, N)
  // unbind, not select: one backward node for all steps (select's backward would build a full-size zero
  // gradient per step, quadratic in L).
  auto x = torch::zeros({B, D, N}, u.options());  // (B, D, N)
  std::vector<Tensor> ys;
  ys.reserve(L);
  for (int64_t l = 0; l < L; ++l) {
    x = decay[l] * x + input[l];
    ys.push_back((x * C[l]).sum(-1));  // (B, D)
  }
  auto y = torch::stack(ys, 2);  // (B, D, L)
  if (Dskip.defined()) y = y + u * Dskip.unsqueeze(-1);
  if (z.defined()) y = y * torch::silu(z);
  add_kernel_flops("selective_scan_ref", selective_scan_flops(B, D, L, N));
  return {y, x};
}

}  // namespace cerebra::ops
