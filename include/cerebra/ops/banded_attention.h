// Sliding-window (banded) softmax self-attention: a blocked CPU kernel with an online softmax over the band only,
// and its plain reference. The window part of a Longformer-style mixer (global tokens are not part of this op).
//
//   q, k, v: (B, H, n, dh)   (self-attention: queries and keys share one length n)
//   key_padding_mask: (B, n) bool, true = real key; or an undefined tensor (every key is real)
//   -> out: (B, H, n, dh) = softmax(scale * q k^T + band and padding masks) v
//
// Query i attends to the keys j = i + t * dilation for t in [-window_left, window_right] with 0 <= j < n and j not
// padded: window_left + window_right + 1 keys at most (Longformer's window w is window_left = window_right = w/2;
// window_right = 0 is causal). Windows are >= 0 (any size; a window >= n reaches every key), dilation >= 1.
// A query row with no key left to attend produces zeros and passes zero gradients (never NaN).
// Floating types: float32 and float64; CPU tensors; any head dim and any length.
//
// banded_attention runs in O(n * w) time and memory (w = window_left + window_right + 1); no (n, n) tensor is
// formed. With dilation d, the rows i = r, r + d, r + 2d, ... (one residue r) attend only to keys of the same
// residue, so each residue class is an independent dilation-1 band over a strided view of the rows (BLAS leading
// dimension d * dh, no copy). Within a class, blocks of query rows multiply against the contiguous key range their
// band covers, in key tiles; only the rows whose band reaches a key tile take part in its products. The forward
// keeps out and the per-row logsumexp; the backward recomputes the band scores. Its products run on the system
// BLAS and are reported to the FLOP counter as "kernel:banded_attention" (2 FLOPs per multiply-add, the products
// that ran, band corners included: forward 2 products per tile, backward 5).
// banded_attention_ref is the same function built from torch ops (materialised (n, n) masked scores), for tests
// and benchmarks.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace cerebra::ops {

// Block shape of banded_attention: query rows per block x key columns per tile of the block's key range.
// Smaller blocks compute fewer scores outside the band (a block of r rows spans r + w - 1 keys), larger ones run
// the BLAS faster; 32 x 32 was the fastest or within 10% of it at dh 64 and w = 33, 129 and 513 (one thread).
struct BandedTiling {
  int64_t q_rows = 32;
  int64_t k_cols = 32;
};

// q, k, v: (B, H, n, dh), key_padding_mask: (B, n) bool or undefined -> (B, H, n, dh)
torch::Tensor banded_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& key_padding_mask, int64_t window_left, int64_t window_right,
                               int64_t dilation, double scale, const BandedTiling& tiling = {});

// Same arguments and result, from plain torch ops.
torch::Tensor banded_attention_ref(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   const torch::Tensor& key_padding_mask, int64_t window_left, int64_t window_right,
                                   int64_t dilation, double scale);

}  // namespace cerebra::ops
