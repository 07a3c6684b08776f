// Exact softmax attention: a tiled CPU kernel with an online softmax (FlashAttention) and its plain reference.
//
//   q: (B, H, n_q, dh), k: (B, H, n_k, dh), v: (B, H, n_k, dh)
//   key_padding_mask: (B, n_k) bool, true = real key; or an undefined tensor (every key is real)
//   -> out: (B, H, n_q, dh) = softmax(scale * q k^T + masks) v
//
// causal: query i attends to keys j <= i (top-left aligned, as torch's scaled_dot_product_attention(is_causal)).
// A query row with no key left to attend produces zeros and passes zero gradients (never NaN).
// Floating types: float32 and float64; CPU tensors; any head dim and any lengths.
//
// tiled_attention keeps only the output and the per-row logsumexp for the backward (O(n) extra memory instead of
// the (B, H, n_q, n_k) probabilities) and recomputes the score tiles there. Its tile products run on the system BLAS
// and are reported to the FLOP counter as "kernel:tiled_attention" (2 FLOPs per multiply-add, the tiles that ran:
// forward 2 products, backward 5; causal runs skip the tiles above the diagonal).
// attention_ref is the same function built from torch ops (materialised scores), for tests and benchmarks.
#pragma once

#include <torch/types.h>

#include <cstdint>

namespace cerebra::ops {

// Tile shape of tiled_attention: query rows x key columns per score tile.
struct AttentionTiling {
  int64_t q_rows = 128;
  int64_t k_cols = 256;
};

// q: (B, H, n_q, dh), k, v: (B, H, n_k, dh), key_padding_mask: (B, n_k) bool or undefined -> (B, H, n_q, dh)
torch::Tensor tiled_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const torch::Tensor& key_padding_mask, bool causal, double scale,
                              const AttentionTiling& tiling = {});

// Packed variable-length form (flash-attention's varlen): S sequences of different lengths laid end to end, no
// padding. Sequence s has query rows cu_q[s] .. cu_q[s+1] and key rows cu_k[s] .. cu_k[s+1] (causal: top-left
// aligned within the sequence); a sequence without keys gives zero rows.
// q: (H, T_q, dh), k, v: (H, T_k, dh), cu_q, cu_k: CPU int64 (S + 1), from 0 to T_q / T_k -> (H, T_q, dh)
torch::Tensor tiled_attention_packed(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                     const torch::Tensor& cu_q, const torch::Tensor& cu_k, bool causal, double scale,
                                     const AttentionTiling& tiling = {});

// Same arguments and result, one attention_ref per sequence.
torch::Tensor attention_packed_ref(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   const torch::Tensor& cu_q, const torch::Tensor& cu_k, bool causal, double scale);

// Same arguments and result as tiled_attention, from plain torch ops.
torch::Tensor attention_ref(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& key_padding_mask, bool causal, double scale);

}  // namespace cerebra::ops
