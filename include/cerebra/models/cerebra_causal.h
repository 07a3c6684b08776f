// The causal Cerebra layer: what the mixer "cerebra" builds when the model must be causal (language models). A few
// tokens take exact softmax attention over every token up to themselves; the others a compressed path over the
// recent past and a memory of the blocks already seen. Every output depends only on the inputs up to its position,
// so the layer can generate token by token (step()) with the same outputs as its full forward.
//
//   x: (B, n, d), mask: (B, n) bool or undefined, padding after each sequence's real tokens -> y: (B, n, d)
//   (causal: a real position never sees a later one, so never a padded one; padding is never routed)
//
// Pieces
//   Router      z_i = x_i·w + b, gate g_i = σ((z_i + ε_i)/τ) as in the non-causal layer (cerebra_layer.h). Training:
//               the min(k, n) highest-scored tokens of each sequence take the full path (top-k reads the whole
//               sequence, so it is a training-time rule only), straight-through in the gates as in topk mode.
//   Predictor   Mixture-of-Depths §3.5: a small MLP p_i = w₂·gelu(W₁·sg(x_i)) (hidden max(8, d/4)), trained on
//               stop-gradient inputs with binary cross-entropy against the top-k selection (aux_loss(); it moves the
//               predictor only). Evaluating and generating: token i takes the full path when p_i > 0, a decision
//               made from x_i alone. stats(): routed_fraction, predictor_agreement (fraction of tokens on which the
//               predictor and top-k agree; in eval against top-k on the noiseless scores). eval_routing = topk
//               evaluates with top-k instead: not causal, it measures what routing by the predictor costs.
//   Full path   the routed tokens' queries (d → d) attend, multi-head, over the keys/values (d → 2d) of every
//               token j ≤ i.
//   Compressed  the other tokens' queries (d → d_c) attend, multi-head in width d_c, jointly (one softmax) over
//   path        the w window keys j ∈ [i − w + 1, i] (keys/values d → 2d_c) and the memory slots: the sequence is
//               cut into blocks of P = memory_block tokens (0: ⌈1/compression_ratio⌉); a finished block s (every
//               token in it ≤ i) is one slot, the mean of a causal depthwise convolution (kernel conv_kernel) of its
//               tokens, projected d → d_c, keys/values d_c → 2d_c. Token i sees the last memory_max finished blocks
//               (memory_max ≤ 0: all of them). Then d_c → d.
//   Output      both paths write into (B, n, d), then the output projection d → d.
//   Dense mode  set_dense(true): every token on the full path (causal multi-head attention), router, predictor and
//               compressed path off.
//   Generation  step() keeps the full path's keys/values of every token seen (a cache that grows), the last w
//               window keys/values, the last conv_kernel − 1 inputs of the convolution, the running sum of the
//               unfinished block and the last memory_max slots' keys/values. step() needs eval mode (the predictor
//               decides) or dense mode.
//
// FLOPs (2 per multiply-add of matmul-class ops, the convention of mixer.h), per sequence of n tokens, with d_c,
// h_p = max(8, d/4), S = ⌊n/P⌋ finished blocks, M = min(memory_max, S) (S when unbounded), κ = conv_kernel:
//   router 2·n·d; predictor 2·n·(d·h_p + h_p)
//   full path       4·n·d² keys/values (when a row runs it) + per row 2·d² + 4·n·d (scores and values over all n
//                   keys, the future masked)
//   compressed      4·n·d·d_c window keys/values, 2·n·d·d_c queries of every position, and the block GEMMs:
//                   positions cut into ⌈n/c⌉ blocks of c (a multiple of P, ≥ max(16, w)); each block's queries meet
//                   the c + w − 1 window positions and the M + c/P slots any of its rows may see, masked per row:
//                   4·⌈n/c⌉·c·(c + w − 1 + M + c/P)·d_c (no slot term when S = 0); when S > 0 the convolution
//                   2·n·d·κ and the slots S·(2·d·d_c + 4·d_c²). All of it when a row runs the path; per row 2·d_c·d.
//                   (Generation computes one token's window and slots: 4·(w + M)·d_c.)
//   output          2·n·d²
// Rows are computed in rectangular blocks over the batch (the largest routed count, and n minus the smallest), and
// realised_flops() counts what ran. flops(n) assumes top-k's min(k, n) routed rows.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "cerebra/models/cerebra_layer.h"

namespace cerebra {

class CausalCerebraLayer : public SequenceMixer {
 public:
  explicit CausalCerebraLayer(const CerebraOptions& o);

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override;
  torch::Tensor step(const torch::Tensor& x, MixerState& state) override;
  bool has_recurrent_step() const override { return true; }
  double flops(int64_t n) const override;
  bool is_causal() const override { return true; }
  torch::Tensor aux_loss() override { return aux_; }
  torch::Tensor expected_flops() override { return expected_; }
  double realised_flops() const override { return realised_; }
  std::map<std::string, double> stats() const override { return stats_; }
  nlohmann::json own_options() const override { return opts_.describe(); }
  void set_temperature(double tau) override;
  void set_exploration(double scale) override { exploration_ = scale; }
  void set_dense(bool dense) override { dense_ = dense; }

  const CerebraOptions& options() const { return opts_; }
  // Of the last forward: (B, n) bool, the tokens that took the full path.
  const torch::Tensor& last_selected() const { return selected_; }

  // Per sequence of n tokens: the cost terms above (base: output projection, router and predictor; the shared work
  // of each path when it runs; one row of each path), and a forward with `full_rows` routed and `comp_rows`
  // compressed rows.
  struct Costs {
    double base = 0, full_shared = 0, per_full = 0, comp_shared = 0, per_comp = 0;
  };
  Costs costs(int64_t n) const;
  double executed(int64_t n, int64_t full_rows, int64_t comp_rows) const;
  int64_t predictor_width() const;
  // The compressed path's block layout for n positions: c query positions per block (a multiple of P, >= 16 and
  // >= w), the window keys c + w − 1 and memory keys M + c/P (0 without a finished block) each block meets.
  struct BlockShape {
    int64_t c = 0, blocks = 0, window_keys = 0, slots = 0, memory_keys = 0;
  };
  BlockShape block_shape(int64_t n) const;
  int64_t query_block() const;

  CerebraRouter router{nullptr};
  torch::nn::Linear pred_in{nullptr}, pred_out{nullptr};  // d -> h_p -> 1 on stop-gradient inputs
  torch::nn::Conv1d dwconv{nullptr};                        // depthwise d -> d, kernel κ, causal (left) padding
  torch::nn::Linear slot_proj{nullptr};                     // d -> d_c: a block's mean to a memory slot
  torch::nn::Linear q_proj{nullptr};                        // d -> d
  torch::nn::Linear kv_proj{nullptr};                       // d -> 2d
  torch::nn::Linear out_proj{nullptr};                      // d -> d
  torch::nn::Linear qc_proj{nullptr};                       // d -> d_c
  torch::nn::Linear kvc_proj{nullptr};                      // d -> 2d_c, window keys then values
  torch::nn::Linear kvm_proj{nullptr};                      // d_c -> 2d_c, memory keys then values
  torch::nn::Linear up_proj{nullptr};                       // d_c -> d

 private:
  torch::Tensor predictor_logits(const torch::Tensor& x);  // (..., d) -> (...), on sg(x)
  // x (B, n, d), rows (B, R) positions -> (B, R, d) outputs before the output projection
  torch::Tensor full_path(const torch::Tensor& x, const torch::Tensor& rows);
  torch::Tensor comp_path(const torch::Tensor& x, const torch::Tensor& rows);

  CerebraOptions opts_;
  bool dense_ = false;
  double exploration_ = 1.0;  // the schedule's exploration (set_exploration), read under gumbel = anneal
  torch::Tensor selected_, aux_, expected_;
  double realised_ = 0;
  std::map<std::string, double> stats_;
};

}  // namespace cerebra
