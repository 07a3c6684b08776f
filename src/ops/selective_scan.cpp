// Selective scan (Mamba S6) on the CPU beside its reference; see include/cerebra/ops/selective_scan.h.
//
// Layout: u, delta, z are read as (B, D, L) (one contiguous row per (b, d)), A as (D, N), and B, C are transposed
// once to (B, L, N) so that the N values of a step are contiguous: the loops over n run W lanes at a time (8 floats
// with AVX2, see simd.h).
// Forward, one work item per (b, d), parallel over B·D: the state x (N values) runs over l in registers/L1, and the
// state at the start of every chunk of `chunk` steps is kept: (B, D, n_chunks, N).
// Backward, per (b, d), chunks from last to first: recompute the chunk's states and a = exp(dt·A) from its start
// state into (chunk, N) buffers, then walk the chunk backwards with the adjoint h = dL/dx_l:
//   h_l = a_{l+1} ∘ h_{l+1} + dy_l · C_l            (+ d last_state at l = L-1)
//   dC_l += dy_l · x_l,   dB_l += dt_l u_l · h_l,   dA += dt_l · (h_l ∘ x_{l-1} ∘ a_l)
//   d dt_l = Σ_n h_l x_{l-1} a_l A + u_l Σ_n h_l B_l,   du_l = Dskip · dy_l + dt_l Σ_n h_l B_l
// Sums over d (dB, dC) and over b (dA, dDskip, d delta_bias) would race between work items. Work items are therefore
// (b, group of channels d); each group adds dB, dC into its own (B, L, N) buffer (a single group unless B is not a
// multiple of the thread count), and dA, dDskip, d delta_bias are written per (b, d) and summed over b afterwards.
#include "cerebra/ops/selective_scan.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cerebra/flop_counter.h"
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
  const T* delta;  // (B, D, L)
  const T* A;      // (D, N)
  const T* Bt;     // (B, L, N)
  const T* Ct;     // (B, L, N)
  const T* Dskip;  // (D) or nullptr
  const T* z;      // (B, D, L) or nullptr
  const T* bias;   // (D) or nullptr
  bool softplus;
  int64_t B, D, L, N, chunk;

  int64_t chunks() const { return (L + chunk - 1) / chunk; }
  int64_t row(int64_t b, int64_t d) const { return (b * D + d) * L; }
  T skip(int64_t d) const { return Dskip ? Dskip[d] : T(0); }
  T bias_of(int64_t d) const { return bias ? bias[d] : T(0); }
  // dt from delta + bias (pre-activation), as torch's softplus (beta 1, threshold 20).
  static T dt_of(T pre, bool sp) { return sp && pre <= T(20) ? std::log1p(std::exp(pre)) : pre; }
};

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Multiply-adds per (b, d, l, n), as documented in the header (selective_scan_flops = 2·kForwardMacs·B·D·L·N).
constexpr double kForwardMacs = 4.0;
constexpr double kBackwardMacs = 12.0;  // + 1 when z is given (the output is recomputed for dz)

double scan_elements(int64_t B, int64_t D, int64_t L, int64_t N) {
  return static_cast<double>(B) * static_cast<double>(D) * static_cast<double>(L) * static_cast<double>(N);
}

// ---------------------------------------------------------------------------------------------------------------
// Forward of one (b, d). Scratch: x (N).

template <typename T, int W>
CEREBRA_INLINE void forward_bd(const Scan<T>& s, int64_t b, int64_t d, T* x, T* y, T* last, T* states) {
  using P = Pack<T, W>;
  const int64_t N = s.N, row = s.row(b, d);
  const T* u = s.u + row;
  const T* delta = s.delta + row;
  const T* z = s.z ? s.z + row : nullptr;
  const T* A = s.A + d * N;
  const T* Bb = s.Bt + b * s.L * N;
  const T* Cb = s.Ct + b * s.L * N;
  const T skip = s.skip(d), bias = s.bias_of(d);
  T* st = states + (b * s.D + d) * s.chunks() * N;
  std::fill(x, x + N, T(0));
  for (int64_t l = 0; l < s.L; ++l) {
    if (l % s.chunk == 0) std::copy(x, x + N, st + (l / s.chunk) * N);
    const T dt = Scan<T>::dt_of(delta[l] + bias, s.softplus), dtu = dt * u[l];
    const T* Bl = Bb + l * N;
    const T* Cl = Cb + l * N;
    T yl = 0;
    int64_t n = 0;
    if constexpr (W > 1) {
      const auto vdt = P::set1(dt), vdtu = P::set1(dtu);
      auto acc = P::set1(0);
      for (; n + W <= N; n += W) {
        const auto a = P::exp(vdt * P::load(A + n));
        const auto xv = a * P::load(x + n) + vdtu * P::load(Bl + n);
        P::store(x + n, xv);
        acc += P::load(Cl + n) * xv;
      }
      yl = P::hsum(acc);
    }
    for (; n < N; ++n) {
      x[n] = std::exp(dt * A[n]) * x[n] + dtu * Bl[n];
      yl += Cl[n] * x[n];
    }
    yl += skip * u[l];
    y[row + l] = z ? yl * z[l] * sigmoid(z[l]) : yl;
  }
  std::copy(x, x + N, last + (b * s.D + d) * N);
}

template <typename T, int W>
CEREBRA_INLINE void forward_rows(const Scan<T>& s, int64_t begin, int64_t end, T* y, T* last, T* states) {
  std::vector<T> x(s.N);
  for (int64_t i = begin; i < end; ++i) forward_bd<T, W>(s, i / s.D, i % s.D, x.data(), y, last, states);
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
  T* ddelta;        // (B, D, L)
  T* dz;            // (B, D, L) or nullptr
  T* dA;            // (B, D, N): per-b partials
  T* dskip;         // (B, D): per-b partials
  T* dbias;         // (B, D): per-b partials
  T* dBt;           // (groups, B, L, N)
  T* dCt;           // (groups, B, L, N)
  int64_t groups;
};

// Scratch for one thread: states X and decays a of a chunk (chunk x N each), dt and pre-gate output per step,
// adjoint h and dA accumulator (N each).
template <typename T>
struct BackwardScratch {
  std::vector<T> buf;
  T *X, *a, *dt, *yo, *h, *dA;
  BackwardScratch(int64_t chunk, int64_t N) : buf(2 * chunk * N + 2 * chunk + 2 * N) {
    X = buf.data();
    a = X + chunk * N;
    dt = a + chunk * N;
    yo = dt + chunk;
    h = yo + chunk;
    dA = h + N;
  }
};

template <typename T, int W>
CEREBRA_INLINE void backward_bd(const Scan<T>& s, const ScanGrad<T>& g, int64_t b, int64_t d, int64_t group,
                                BackwardScratch<T>& w) {
  using P = Pack<T, W>;
  const int64_t N = s.N, row = s.row(b, d), bd = b * s.D + d;
  const T* u = s.u + row;
  const T* delta = s.delta + row;
  const T* z = s.z ? s.z + row : nullptr;
  const T* A = s.A + d * N;
  const T* Bb = s.Bt + b * s.L * N;
  const T* Cb = s.Ct + b * s.L * N;
  const T* st = g.states + bd * s.chunks() * N;
  T* dBb = g.dBt + (group * s.B + b) * s.L * N;
  T* dCb = g.dCt + (group * s.B + b) * s.L * N;
  const T skip = s.skip(d), bias = s.bias_of(d);
  if (g.dlast)
    std::copy(g.dlast + bd * N, g.dlast + (bd + 1) * N, w.h);
  else
    std::fill(w.h, w.h + N, T(0));
  std::fill(w.dA, w.dA + N, T(0));
  T dskip = 0, dbias = 0;

  for (int64_t c = s.chunks() - 1; c >= 0; --c) {
    const int64_t l0 = c * s.chunk, nt = std::min(s.chunk, s.L - l0);
    const T* x0 = st + c * N;
    // Recompute the chunk: X[t] = state after step l0 + t, a[t] = exp(dt·A), yo[t] = C·x (only needed for dz).
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t l = l0 + t;
      const T dt = Scan<T>::dt_of(delta[l] + bias, s.softplus), dtu = dt * u[l];
      const T* xp = t > 0 ? w.X + (t - 1) * N : x0;
      T* Xt = w.X + t * N;
      T* at = w.a + t * N;
      const T* Bl = Bb + l * N;
      const T* Cl = Cb + l * N;
      w.dt[t] = dt;
      T yl = 0;
      int64_t n = 0;
      if constexpr (W > 1) {
        const auto vdt = P::set1(dt), vdtu = P::set1(dtu);
        auto acc = P::set1(0);
        for (; n + W <= N; n += W) {
          const auto a = P::exp(vdt * P::load(A + n));
          const auto xv = a * P::load(xp + n) + vdtu * P::load(Bl + n);
          P::store(at + n, a);
          P::store(Xt + n, xv);
          if (z) acc += P::load(Cl + n) * xv;
        }
        yl = P::hsum(acc);
      }
      for (; n < N; ++n) {
        at[n] = std::exp(dt * A[n]);
        Xt[n] = at[n] * xp[n] + dtu * Bl[n];
        yl += Cl[n] * Xt[n];
      }
      w.yo[t] = yl + skip * u[l];
    }
    // Adjoint, backwards through the chunk.
    for (int64_t t = nt - 1; t >= 0; --t) {
      const int64_t l = l0 + t;
      const T dt = w.dt[t], ul = u[l], dtu = dt * ul;
      T dy = g.dy[row + l];
      if (z) {  // y = yo · silu(z)
        const T zl = z[l], sg = sigmoid(zl);
        g.dz[row + l] = dy * w.yo[t] * sg * (T(1) + zl * (T(1) - sg));
        dy *= zl * sg;
      }
      dskip += dy * ul;
      const T* Xt = w.X + t * N;
      const T* xp = t > 0 ? w.X + (t - 1) * N : x0;
      const T* at = w.a + t * N;
      const T* Bl = Bb + l * N;
      const T* Cl = Cb + l * N;
      T* dBl = dBb + l * N;
      T* dCl = dCb + l * N;
      T* h = w.h;
      T* dA = w.dA;
      T s_gaA = 0, s_hB = 0;  // Σ h·x_{l-1}·a·A and Σ h·B
      int64_t n = 0;
      if constexpr (W > 1) {
        const auto vdy = P::set1(dy), vdt = P::set1(dt), vdtu = P::set1(dtu);
        auto acc_gaA = P::set1(0), acc_hB = P::set1(0);
        for (; n + W <= N; n += W) {
          const auto a = P::load(at + n);
          const auto hv = P::load(h + n) + vdy * P::load(Cl + n);
          P::store(dCl + n, P::load(dCl + n) + vdy * P::load(Xt + n));
          const auto ga = hv * P::load(xp + n) * a;
          acc_gaA += ga * P::load(A + n);
          P::store(dA + n, P::load(dA + n) + ga * vdt);
          acc_hB += hv * P::load(Bl + n);
          P::store(dBl + n, P::load(dBl + n) + hv * vdtu);
          P::store(h + n, a * hv);
        }
        s_gaA = P::hsum(acc_gaA);
        s_hB = P::hsum(acc_hB);
      }
      for (; n < N; ++n) {
        const T hv = h[n] + dy * Cl[n];
        dCl[n] += dy * Xt[n];
        const T ga = hv * xp[n] * at[n];
        s_gaA += ga * A[n];
        dA[n] += ga * dt;
        s_hB += hv * Bl[n];
        dBl[n] += hv * dtu;
        h[n] = at[n] * hv;
      }
      g.du[row + l] = dy * skip + s_hB * dt;
      const T ddt = s_gaA + s_hB * ul;
      const T pre = delta[l] + bias;
      const T dd = (s.softplus && pre <= T(20)) ? ddt * sigmoid(pre) : ddt;
      g.ddelta[row + l] = dd;
      dbias += dd;
    }
  }
  std::copy(w.dA, w.dA + N, g.dA + bd * N);
  g.dskip[bd] = dskip;
  g.dbias[bd] = dbias;
}

// Work item t = (b, group): channels [group·D/groups, (group+1)·D/groups) of batch b.
template <typename T, int W>
CEREBRA_INLINE void backward_items(const Scan<T>& s, const ScanGrad<T>& g, int64_t begin, int64_t end) {
  BackwardScratch<T> w(s.chunk, s.N);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t b = t / g.groups, group = t % g.groups;
    const int64_t d0 = group * s.D / g.groups, d1 = (group + 1) * s.D / g.groups;
    for (int64_t d = d0; d < d1; ++d) backward_bd<T, W>(s, g, b, d, group, w);
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
  Tensor u, delta, A, Bt, Ct, Dskip, z, bias;  // Bt, Ct: (B, L, N); optional ones may be undefined
};

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename T>
Scan<T> describe(const ScanTensors& t, bool softplus, int64_t chunk) {
  return Scan<T>{t.u.data_ptr<T>(),    t.delta.data_ptr<T>(), t.A.data_ptr<T>(), t.Bt.data_ptr<T>(),
                 t.Ct.data_ptr<T>(),   ptr_or_null<T>(t.Dskip), ptr_or_null<T>(t.z), ptr_or_null<T>(t.bias),
                 softplus,             t.u.size(0),           t.u.size(1),       t.u.size(2),
                 t.A.size(1),          chunk};
}

// -> y: (B, D, L), last_state: (B, D, N), chunk states: (B, D, n_chunks, N)
std::tuple<Tensor, Tensor, Tensor> forward_kernel(const ScanTensors& t, bool softplus, int64_t chunk) {
  const int64_t B = t.u.size(0), D = t.u.size(1), L = t.u.size(2), N = t.A.size(1);
  auto y = torch::empty_like(t.u);
  auto last = torch::empty({B, D, N}, t.u.options());
  auto states = torch::empty({B, D, (L + chunk - 1) / chunk, N}, t.u.options());
  AT_DISPATCH_FLOATING_TYPES(t.u.scalar_type(), "selective_scan_forward", [&] {
    const auto s = describe<scalar_t>(t, softplus, chunk);
    scalar_t *py = y.data_ptr<scalar_t>(), *pl = last.data_ptr<scalar_t>(), *ps = states.data_ptr<scalar_t>();
    at::parallel_for(0, B * D, 1, [&](int64_t b, int64_t e) { forward_rows_any(s, b, e, py, pl, ps); });
  });
  add_kernel_flops("selective_scan", 2.0 * kForwardMacs * scan_elements(B, D, L, N));
  return {y, last, states};
}

// dy: (B, D, L), dlast: (B, D, N) or undefined -> du, ddelta, dA, dB (B, N, L), dC (B, N, L), dDskip, dz, dbias
std::vector<Tensor> backward_kernel(const ScanTensors& t, const Tensor& states, const Tensor& dy,
                                    const Tensor& dlast, bool softplus, int64_t chunk) {
  const int64_t B = t.u.size(0), D = t.u.size(1), L = t.u.size(2), N = t.A.size(1);
  const int64_t threads = at::get_num_threads();
  const int64_t groups = (B % threads == 0) ? 1 : std::min<int64_t>(threads, D);
  auto du = torch::empty_like(t.u), ddelta = torch::empty_like(t.delta);
  auto dz = t.z.defined() ? torch::empty_like(t.z) : Tensor();
  auto dA = torch::empty({B, D, N}, t.u.options());
  auto dskip = torch::empty({B, D}, t.u.options()), dbias = torch::empty({B, D}, t.u.options());
  auto dBt = torch::zeros({groups, B, L, N}, t.u.options()), dCt = torch::zeros({groups, B, L, N}, t.u.options());
  AT_DISPATCH_FLOATING_TYPES(t.u.scalar_type(), "selective_scan_backward", [&] {
    const auto s = describe<scalar_t>(t, softplus, chunk);
    const ScanGrad<scalar_t> g{dy.data_ptr<scalar_t>(),     ptr_or_null<scalar_t>(dlast),
                               states.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(),
                               ddelta.data_ptr<scalar_t>(), dz.defined() ? dz.data_ptr<scalar_t>() : nullptr,
                               dA.data_ptr<scalar_t>(),     dskip.data_ptr<scalar_t>(),
                               dbias.data_ptr<scalar_t>(),  dBt.data_ptr<scalar_t>(),
                               dCt.data_ptr<scalar_t>(),    groups};
    at::parallel_for(0, B * groups, 1, [&](int64_t b, int64_t e) { backward_items_any(s, g, b, e); });
  });
  add_kernel_flops("selective_scan",
                   2.0 * (kBackwardMacs + (t.z.defined() ? 1.0 : 0.0)) * scan_elements(B, D, L, N));
  auto sum_groups = [&](const Tensor& x) { return (groups == 1 ? x[0] : x.sum(0)).transpose(1, 2); };
  return {du,
          ddelta,
          dA.sum(0),
          sum_groups(dBt),
          sum_groups(dCt),
          t.Dskip.defined() ? dskip.sum(0) : Tensor(),
          dz,
          t.bias.defined() ? dbias.sum(0) : Tensor()};
}

// ---------------------------------------------------------------------------------------------------------------
// Autograd function. Optional tensors come in as c10::optional: autograd functions take no undefined inputs.

Tensor value_or_undefined(const c10::optional<Tensor>& t) { return t.has_value() ? t->contiguous() : Tensor(); }

struct SelectiveScanFunction : public torch::autograd::Function<SelectiveScanFunction> {
  // u, delta: (B, D, L), A: (D, N), Bm, Cm: (B, N, L), Dskip: (D)?, z: (B, D, L)?, delta_bias: (D)?
  // -> {y: (B, D, L), last_state: (B, D, N)}
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& u,
                                                const Tensor& delta, const Tensor& A, const Tensor& Bm,
                                                const Tensor& Cm, const c10::optional<Tensor>& Dskip,
                                                const c10::optional<Tensor>& z,
                                                const c10::optional<Tensor>& delta_bias, bool delta_softplus,
                                                int64_t chunk) {
    ScanTensors t{u.contiguous(),
                  delta.contiguous(),
                  A.contiguous(),
                  Bm.transpose(1, 2).contiguous(),
                  Cm.transpose(1, 2).contiguous(),
                  value_or_undefined(Dskip),
                  value_or_undefined(z),
                  value_or_undefined(delta_bias)};
    auto [y, last, states] = forward_kernel(t, delta_softplus, chunk);
    ctx->save_for_backward({t.u, t.delta, t.A, t.Bt, t.Ct, t.Dskip, t.z, t.bias, states});
    ctx->saved_data["softplus"] = delta_softplus;
    ctx->saved_data["chunk"] = chunk;
    return {y, last};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto v = ctx->get_saved_variables();
    const ScanTensors t{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
    const Tensor dy = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(t.u);
    const Tensor dlast = grads[1].defined() ? grads[1].contiguous() : Tensor();
    auto g = backward_kernel(t, v[8], dy, dlast, ctx->saved_data["softplus"].toBool(),
                             ctx->saved_data["chunk"].toInt());
    g.push_back(Tensor());  // delta_softplus
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
  TORCH_CHECK(Bm.dim() == 3 && Bm.size(0) == B && Bm.size(1) == N && Bm.size(2) == L, op,
              ": Bm must be (B, N, L) = (", B, ", ", N, ", ", L, "), got ", Bm.sizes());
  TORCH_CHECK(Cm.sizes() == Bm.sizes(), op, ": Cm must be (B, N, L) = (", B, ", ", N, ", ", L, "), got ",
              Cm.sizes());
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

c10::optional<Tensor> optional_of(const Tensor& t) {
  return t.defined() ? c10::optional<Tensor>(t) : c10::nullopt;
}

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
  auto out = SelectiveScanFunction::apply(u, delta, A, Bm, Cm, optional_of(Dskip), optional_of(z),
                                          optional_of(delta_bias), delta_softplus, chunk);
  return {out[0], out[1]};
}

// u, delta: (B, D, L), A: (D, N), Bm, Cm: (B, N, L), Dskip: (D)?, z: (B, D, L)?, delta_bias: (D)?
// -> {y: (B, D, L), last_state: (B, D, N)}
std::tuple<Tensor, Tensor> selective_scan_ref(const Tensor& u, const Tensor& delta, const Tensor& A,
                                              const Tensor& Bm, const Tensor& Cm, const Tensor& Dskip,
                                              const Tensor& z, const Tensor& delta_bias, bool delta_softplus) {
  check_inputs("selective_scan_ref", u, delta, A, Bm, Cm, Dskip, z, delta_bias);
  const int64_t B = u.size(0), D = u.size(1), L = u.size(2), N = A.size(1);
  auto dt = delta_bias.defined() ? delta + delta_bias.unsqueeze(-1) : delta;  // (B, D, L)
  if (delta_softplus) dt = torch::softplus(dt);
  const auto decay = torch::exp(dt.unsqueeze(-1) * A.unsqueeze(1));                   // (B, D, L, N)
  const auto input = (dt * u).unsqueeze(-1) * Bm.transpose(1, 2).unsqueeze(1);        // (B, D, L, N)
  auto x = torch::zeros({B, D, N}, u.options());                                       // (B, D, N)
  std::vector<Tensor> ys;
  ys.reserve(L);
  for (int64_t l = 0; l < L; ++l) {
    x = decay.select(2, l) * x + input.select(2, l);
    ys.push_back((x * Cm.select(2, l).unsqueeze(1)).sum(-1));  // (B, D)
  }
  auto y = torch::stack(ys, 2);  // (B, D, L)
  if (Dskip.defined()) y = y + u * Dskip.unsqueeze(-1);
  if (z.defined()) y = y * torch::silu(z);
  add_kernel_flops("selective_scan_ref", selective_scan_flops(B, D, L, N));
  return {y, x};
}

}  // namespace cerebra::ops
