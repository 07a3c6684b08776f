// Row operations shared by the tiled softmax kernels (attention.cpp, banded_attention.cpp): the key-padding bias
// of a key tile, and the online-softmax steps on one row of a score tile, W lanes at a time (Pack<T, W>, simd.h)
// with a scalar tail. Not a public header.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "simd.h"

namespace cerebra::ops::rows {

using simd::Pack;

// bias[c] = 0 for a real key c0 + c (the mask read at `stride`), -inf for a padded one.
// Returns {some key padded, every key padded}.
template <typename T>
std::pair<bool, bool> key_bias(const bool* mask, int64_t stride, int64_t c0, int64_t nc, T* bias) {
  if (mask == nullptr) return {false, false};
  int64_t real = 0;
  for (int64_t c = 0; c < nc; ++c) {
    const bool m = mask[(c0 + c) * stride];
    bias[c] = m ? T(0) : -std::numeric_limits<T>::infinity();
    real += m;
  }
  return {real < nc, real == 0};
}

template <typename T, int W>
CEREBRA_INLINE void row_add(T* s, const T* b, int64_t n) {  // s += b
  using P = Pack<T, W>;
  int64_t i = 0;
  if constexpr (W > 1)
    for (; i + W <= n; i += W) P::store(s + i, P::load(s + i) + P::load(b + i));
  for (; i < n; ++i) s[i] += b[i];
}

template <typename T, int W>
CEREBRA_INLINE T row_max(const T* s, int64_t n) {
  using P = Pack<T, W>;
  T m = -std::numeric_limits<T>::infinity();
  int64_t i = 0;
  if constexpr (W > 1) {
    if (n >= W) {
      auto acc = P::load(s);
      for (i = W; i + W <= n; i += W) acc = P::max(acc, P::load(s + i));
      m = P::hmax(acc);
    }
  }
  for (; i < n; ++i) m = s[i] > m ? s[i] : m;
  return m;
}

template <typename T, int W>
CEREBRA_INLINE T row_exp(T* s, int64_t n, T shift) {  // s = exp(s - shift); returns the sum
  using P = Pack<T, W>;
  T sum = 0;
  int64_t i = 0;
  if constexpr (W > 1) {
    const auto sh = P::set1(shift);
    auto acc = P::set1(0);
    for (; i + W <= n; i += W) {
      const auto e = P::exp(P::load(s + i) - sh);
      P::store(s + i, e);
      acc += e;
    }
    sum = P::hsum(acc);
  }
  for (; i < n; ++i) {
    s[i] = std::exp(s[i] - shift);
    sum += s[i];
  }
  return sum;
}

template <typename T, int W>
CEREBRA_INLINE void row_scale(T* s, int64_t n, T a) {  // s *= a
  using P = Pack<T, W>;
  int64_t i = 0;
  if constexpr (W > 1)
    for (; i + W <= n; i += W) P::store(s + i, P::load(s + i) * a);
  for (; i < n; ++i) s[i] *= a;
}

template <typename T, int W>
CEREBRA_INLINE void row_dsoftmax(T* p, const T* dp, int64_t n, T d) {  // p = p * (dp - d)
  using P = Pack<T, W>;
  int64_t i = 0;
  if constexpr (W > 1)
    for (; i + W <= n; i += W) P::store(p + i, P::load(p + i) * (P::load(dp + i) - d));
  for (; i < n; ++i) p[i] *= dp[i] - d;
}

template <typename T>
void fill(T* p, int64_t n, T x) {
  std::fill(p, p + n, x);
}

}  // namespace cerebra::ops::rows
