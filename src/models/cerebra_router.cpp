// The Cerebra router: per-token gate g_i = σ((z_i + ε_i)/τ) and the hard selection of topk / threshold routing.
#include <torch/torch.h>

#include <algorithm>

#include "cerebra/models/cerebra_layer.h"
#include "cerebra/models/quant.h"

namespace cerebra {

CerebraRouterImpl::CerebraRouterImpl(int64_t d_model) {
  score = register_module("score", torch::nn::Linear(d_model, 1));
  torch::NoGradGuard g;
  score->weight.normal_(0.0, 0.02);
  score->bias.zero_();
}

// x: (B, n, d), mask: (B, n) bool -> routing (see Routing in the header)
Routing CerebraRouterImpl::forward(const torch::Tensor& x, const torch::Tensor& mask, const CerebraOptions& o,
                                   double noise) {
  const int64_t B = x.size(0), n = x.size(1);
  auto z = cerebra::linear(score, x).squeeze(-1);  // (B, n)
  if (noise > 0) {
    // Logistic noise log u − log(1 − u): the binary-concrete relaxation of a Bernoulli(σ(z)) choice (scale 1).
    auto u = torch::rand_like(z).clamp(1e-6, 1.0 - 1e-6);
    z = z + noise * (torch::log(u) - torch::log1p(-u));
  }
  auto logits = z / o.tau;
  Routing r;
  r.gates = torch::where(mask, torch::sigmoid(logits), torch::zeros_like(logits));
  torch::Tensor forced;  // (B, n) bool: the readout token, always selected
  if (o.route_last && n > 0) {
    forced = torch::zeros({B, n}, mask.options());
    forced.select(1, n - 1).copy_(mask.select(1, n - 1));
    r.gates = torch::where(forced, torch::ones_like(r.gates), r.gates);
    logits = torch::where(forced, torch::full_like(logits, std::numeric_limits<double>::infinity()), logits);
  }

  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  const auto valid = mask.sum(1);  // (B) int64
  if (o.mode == RoutingMode::kSoft) {
    r.selected = (r.gates >= 0.5).logical_and(mask);
    r.count = r.selected.sum(1);
    r.full_rows = n;
    r.comp_start = 0;
    return r;
  }

  // Rank by score: a stable descending sort sends equal scores to the lower index; padding (−inf) ranks last.
  auto score_d = logits.detach().masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  r.order = std::get<1>(torch::sort(score_d, /*stable=*/true, /*dim=*/1, /*descending=*/true));  // (B, n)
  auto rank_pos = torch::arange(n, long_opts).unsqueeze(0);                                       // (1, n)
  auto rank = torch::empty_like(r.order).scatter_(1, r.order, rank_pos.expand({B, n}));          // (B, n)

  if (o.mode == RoutingMode::kTopK) {
    // Exactly min(k, valid_b) real tokens; rows [0, min(k, n)) run the full path (padding rows there when a
    // sequence has fewer than k real tokens: their outputs are never read).
    r.count = torch::clamp_max(valid, o.topk);
    r.full_rows = std::min(o.topk, n);
    r.comp_start = r.full_rows;
    r.use_full = (rank_pos < r.full_rows).expand({B, n});
  } else {
    // g ≥ 0.5 among real tokens is a prefix of the ranking (σ is monotone); threshold keeps at most k_max of it,
    // adaptive all of it; both at least the k_min best real tokens.
    auto above = (r.gates >= 0.5).logical_and(mask).sum(1);  // the forced token's gate is 1
    if (o.k_min > 0) above = torch::maximum(above, torch::clamp_max(valid, o.k_min));
    r.count = o.mode == RoutingMode::kAdaptive ? above : torch::clamp_max(above, o.k_max);
    r.full_rows = B > 0 ? r.count.max().item<int64_t>() : 0;
    r.comp_start = B > 0 ? r.count.min().item<int64_t>() : 0;
    r.use_full = rank_pos < r.count.unsqueeze(1);
  }
  r.selected = (rank < r.count.unsqueeze(1)).logical_and(mask);
  return r;
}

}  // namespace cerebra
