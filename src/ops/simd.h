// Internal helpers for the project's CPU kernels: short vectors written with GCC/Clang vector extensions, so that
// one kernel body compiles to AVX2+FMA code inside a wrapper marked CEREBRA_TARGET_AVX2 (chosen at run time by
// cpu_has_avx2()) and to baseline SSE2 code everywhere else. Not a public header.
//
// Pattern used by the kernels:
//   template <typename T, int W> CEREBRA_INLINE void body(...);          // uses Pack<T, W>
//   CEREBRA_TARGET_AVX2 void body_avx2(...) { body<float, 8>(...); }     // inlined here, compiled for AVX2
//   void body_generic(...) { body<float, 4>(...); }                       // compiled for the baseline ISA
// Pack<T, 1> is the scalar fallback (std::exp, exact); doubles use it.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__GNUC__) && !defined(__clang__)
// 256-bit vectors only cross always-inline boundaries, never a real call, so the ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define CEREBRA_INLINE __attribute__((always_inline)) inline

#if defined(__x86_64__)
#define CEREBRA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define CEREBRA_TARGET_AVX2
#endif

namespace cerebra::ops::simd {

// True when the CPU runs AVX2 and FMA (checked once).
inline bool cpu_has_avx2() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

// W lanes of T. Loads and stores are unaligned.
template <typename T, int W>
struct Pack {
  typedef T V __attribute__((vector_size(sizeof(T) * W)));
  typedef int32_t I __attribute__((vector_size(sizeof(int32_t) * W)));
  static constexpr int width = W;

  static CEREBRA_INLINE V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static CEREBRA_INLINE void store(T* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }
  static CEREBRA_INLINE V set1(T x) { return V{} + x; }
  static CEREBRA_INLINE V max(const V& a, const V& b) { return a > b ? a : b; }
  // Pairwise in registers: log2(W) dependent adds, not W - 1.
  static CEREBRA_INLINE T hsum(const V& v) {
    if constexpr (W == 8) {
      const auto h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
      const auto q = __builtin_shufflevector(h, h, 0, 1) + __builtin_shufflevector(h, h, 2, 3);
      return q[0] + q[1];
    } else if constexpr (W == 4) {
      const auto q = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
      return q[0] + q[1];
    } else {
      T s = v[0];
      for (int i = 1; i < W; ++i) s += v[i];
      return s;
    }
  }
  static CEREBRA_INLINE T hmax(const V& v) {
    T m = v[0];
    for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
    return m;
  }
  // exp for float lanes (Cephes expf: range reduction by ln 2, degree-6 polynomial; max relative error ~1.2e-7
  // on [-87, 88]). Inputs below -87 (including -inf) give exactly 0; inputs above 88 saturate at exp(88).
  static CEREBRA_INLINE V exp(const V& in) {
    static_assert(sizeof(T) == 4, "Pack::exp is the float version; doubles use Pack<double, 1>");
    const V lo = set1(-87.0f), hi = set1(88.0f);
    V x = in < lo ? lo : in;
    x = x > hi ? hi : x;
    V fn = x * 1.44269504088896341f + 12582912.0f;  // round(x / ln2) by the 1.5 * 2^23 trick
    fn = fn - 12582912.0f;
    V r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    V p = set1(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const I n = __builtin_convertvector(fn, I);
    const I bits = (n + 127) << 23;  // 2^n as a float bit pattern
    const V res = p * (V)bits;       // vector cast: same bits, reinterpreted
    return in < lo ? set1(0.0f) : res;
  }
};

// Scalar lanes: exact std::exp, used for doubles and for the tails of vector loops.
template <typename T>
struct Pack<T, 1> {
  using V = T;
  static constexpr int width = 1;
  static CEREBRA_INLINE V load(const T* p) { return *p; }
  static CEREBRA_INLINE void store(T* p, V v) { *p = v; }
  static CEREBRA_INLINE V set1(T x) { return x; }
  static CEREBRA_INLINE V max(V a, V b) { return a > b ? a : b; }
  static CEREBRA_INLINE T hsum(V v) { return v; }
  static CEREBRA_INLINE T hmax(V v) { return v; }
  static CEREBRA_INLINE V exp(V x) { return std::exp(x); }
};

// Lane count of the vector path for T when compiled for AVX2 (`avx2` true) or the baseline ISA.
template <typename T>
constexpr int lanes(bool avx2) {
  return sizeof(T) == 4 ? (avx2 ? 8 : 4) : 1;
}

}  // namespace cerebra::ops::simd
