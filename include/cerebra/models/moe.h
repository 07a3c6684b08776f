// Mixture-of-Experts feed-forward (Switch Transformer / GShard style), a drop-in for the backbone's dense
// feed-forward block (`ffn_layers: moe` in the config; not a sequence mixer: it acts on each token alone).
//
//   router:   p(x) = softmax(W_r x), W_r: (E, d), no bias. Each real token goes to its top-k experts (k = 1 or 2).
//             Gate of a chosen expert: k = 1: p_e(x) (Switch); k = 2: p_e(x) / (p_e1(x) + p_e2(x)) (renormalised).
//   experts:  E independent feed-forwards out_e(gelu(in_e(x))), d -> h -> d (h = ffn_mult · d).
//   capacity: C = ceil(capacity · k · T / E) token slots per expert, T = real tokens in the batch. Slots are given
//             in order of choice rank (every token's first choice before any second choice), then of token
//             position in the flattened batch. An assignment over capacity is dropped: with no slot at all the
//             token's FFN output is 0, i.e. the token follows the residual.
//   output:   y(x) = Σ over kept assignments of gate_e(x) · expert_e(x); padded tokens (mask false) are not routed
//             and their output is 0.
//   balance:  Switch load-balancing loss E · Σ_e f_e · P_e over the real tokens of the last forward, with
//             f_e = share of the k·T assignments (before capacity) that chose e, P_e = mean router probability of
//             e. It is 1 for perfectly uniform routing; aux_loss() = aux_weight · balance.
//
// Work: each expert gathers its own tokens and runs its two linears on them only (index_select, two GEMMs,
// index_add), so the executed FLOPs per token are router 2·d·E plus k · 4·d·h, flat in E at fixed k apart from the
// router. flops(n) is that for n real tokens when no assignment is dropped, which the FlopCounter confirms.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace cerebra {

struct MoeOptions {
  int64_t experts = 8;      // E
  int64_t topk = 1;         // 1 or 2
  double capacity = 1.25;   // capacity factor (> 0)
  double aux_weight = 0.01; // weight of the balance loss in the objective
  void validate() const;    // throws std::invalid_argument
};

class MoeFeedForwardImpl : public torch::nn::Module {
 public:
  MoeFeedForwardImpl(int64_t d_model, int64_t hidden, const MoeOptions& options);
  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d); padded positions hold 0.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
  // Analytic forward FLOPs for n real tokens when no assignment is dropped: n · (2·d·E + k · 4·d·h).
  double flops(int64_t n) const;
  // Expert FLOPs of one token on one expert: 4·d·h.
  double expert_flops_per_token() const;

  // E · Σ f_e · P_e of the last forward (undefined before any forward or when it had no real token).
  torch::Tensor balance_loss() const { return balance_; }
  // aux_weight · balance_loss() (undefined when balance_loss() is).
  torch::Tensor aux_loss() const;

  // Statistics of the last forward.
  int64_t last_tokens() const { return last_tokens_; }      // real tokens routed
  int64_t last_dropped() const { return last_dropped_; }    // assignments dropped for capacity
  int64_t last_capacity() const { return last_capacity_; }  // slots per expert
  std::vector<int64_t> last_load() const { return last_load_; }  // kept assignments per expert
  // FLOPs the last forward executed (router + experts on the kept assignments).
  double last_flops() const;

  const MoeOptions& options() const { return options_; }
  int64_t d_model() const { return d_; }
  int64_t hidden() const { return h_; }
  torch::nn::Linear router() const { return router_; }
  torch::nn::Linear expert_in(int64_t e) const { return in_.at(static_cast<size_t>(e)); }
  torch::nn::Linear expert_out(int64_t e) const { return out_.at(static_cast<size_t>(e)); }

 private:
  MoeOptions options_;
  int64_t d_, h_;
  torch::nn::Linear router_{nullptr};
  std::vector<torch::nn::Linear> in_, out_;
  torch::Tensor balance_;
  int64_t last_tokens_ = 0, last_dropped_ = 0, last_capacity_ = 0;
  std::vector<int64_t> last_load_;
};
TORCH_MODULE(MoeFeedForward);

}  // namespace cerebra
