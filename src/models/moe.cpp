// Mixture-of-Experts feed-forward: top-k routing with capacity, per-expert gather/GEMM/scatter, Switch balance loss.
// Design: include/cerebra/models/moe.h.
#include "cerebra/models/moe.h"

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "cerebra/core/config.h"
#include "cerebra/models/quant.h"
#include "cerebra/ops/activations.h"

namespace cerebra {

namespace {
// The MoE keys of the model group (read by the spec parse, src/train/spec.cpp).
struct MoeKeys {
  MoeKeys() {
    register_config_keys({
        {"moe_experts", ValueType::Int, "8", "moe feed-forward: experts E", {}, "model"},
        {"moe_topk", ValueType::Int, "1", "moe feed-forward: experts per token (1 = Switch, 2 = GShard)", {}, "model"},
        {"moe_capacity", ValueType::Float, "1.25", "moe feed-forward: capacity factor; each expert takes at most "
         "ceil(capacity * topk * tokens / E) tokens of a batch, the rest follow the residual", {}, "model"},
        {"moe_aux_weight", ValueType::Float, "0.01", "moe feed-forward: weight of the load-balancing loss "
         "E * sum_e f_e * P_e in the objective", {}, "model"},
    });
  }
};
MoeKeys moe_keys;
}  // namespace

void MoeOptions::validate() const {
  if (experts < 1) throw std::invalid_argument("moe_experts must be >= 1, got " + std::to_string(experts));
  if (topk < 1 || topk > 2) throw std::invalid_argument("moe_topk must be 1 or 2, got " + std::to_string(topk));
  if (topk > experts)
    throw std::invalid_argument("moe_topk (" + std::to_string(topk) + ") exceeds moe_experts (" +
                                std::to_string(experts) + ")");
  if (!(capacity > 0)) throw std::invalid_argument("moe_capacity must be > 0, got " + std::to_string(capacity));
  if (!(aux_weight >= 0)) throw std::invalid_argument("moe_aux_weight must be >= 0, got " + std::to_string(aux_weight));
}

MoeFeedForwardImpl::MoeFeedForwardImpl(int64_t d_model, int64_t hidden, const MoeOptions& options)
    : options_(options), d_(d_model), h_(hidden) {
  options.validate();
  TORCH_CHECK(d_model >= 1 && hidden >= 1, "moe: d_model and hidden must be >= 1");
  router_ = register_module("router", torch::nn::Linear(torch::nn::LinearOptions(d_model, options.experts).bias(false)));
  for (int64_t e = 0; e < options.experts; ++e) {
    const std::string s = std::to_string(e);
    in_.push_back(register_module("in" + s, torch::nn::Linear(d_model, hidden)));
    out_.push_back(register_module("out" + s, torch::nn::Linear(hidden, d_model)));
  }
}

double MoeFeedForwardImpl::expert_flops_per_token() const {
  return 4.0 * static_cast<double>(d_) * static_cast<double>(h_);
}

double MoeFeedForwardImpl::flops(int64_t n) const {
  const double router = 2.0 * static_cast<double>(d_) * static_cast<double>(options_.experts);
  return static_cast<double>(n) * (router + static_cast<double>(options_.topk) * expert_flops_per_token());
}

double MoeFeedForwardImpl::last_flops() const {
  double kept = 0;
  for (auto c : last_load_) kept += static_cast<double>(c);
  return 2.0 * static_cast<double>(d_) * static_cast<double>(options_.experts) * static_cast<double>(last_tokens_) +
         kept * expert_flops_per_token();
}

torch::Tensor MoeFeedForwardImpl::aux_loss() const {
  if (!balance_.defined()) return {};
  return options_.aux_weight * balance_;
}

torch::Tensor MoeFeedForwardImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == d_, "moe: x must be (B, n, ", d_, "), got ", x.sizes());
  const int64_t E = options_.experts, k = options_.topk;
  auto flat = x.reshape({-1, d_});
  torch::Tensor rows;  // flat indices of the real tokens (undefined = every token)
  torch::Tensor xt = flat;
  if (mask.defined()) {
    TORCH_CHECK(mask.dim() == 2 && mask.size(0) == x.size(0) && mask.size(1) == x.size(1), "moe: mask must be (B, n)");
    rows = mask.reshape({-1}).to(torch::kBool).nonzero().view({-1});
    xt = flat.index_select(0, rows);
  }
  const int64_t T = xt.size(0);
  last_tokens_ = T;
  last_dropped_ = 0;
  last_load_.assign(static_cast<size_t>(E), 0);
  if (T == 0) {
    last_capacity_ = 0;
    balance_ = torch::Tensor();
    return torch::zeros_like(x);
  }

  // Routing: probabilities, top-k choices and their gates.
  auto probs = torch::softmax(cerebra::linear(router_, xt), -1);  // (T, E)
  auto [top_p, top_e] = probs.topk(k, -1);                         // (T, k)
  auto gates = k == 1 ? top_p : top_p / top_p.sum(-1, true);

  // Switch balance loss over the assignments before capacity.
  {
    auto ones = torch::ones({T * k}, probs.options());
    auto f = torch::zeros({E}, probs.options()).index_add_(0, top_e.reshape({-1}), ones) / static_cast<double>(T * k);
    balance_ = static_cast<double>(E) * (f.detach() * probs.mean(0)).sum();
  }

  // Assignments in slot order: rank-major (every first choice before any second choice), then token order.
  auto e_flat = top_e.t().reshape({-1});                                          // (k·T)
  auto tok_flat = torch::arange(T, top_e.options()).repeat({k});                  // (k·T)
  auto gate_flat = gates.t().reshape({-1});                                       // (k·T)
  auto sorted = torch::sort(e_flat, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto order = std::get<1>(sorted);
  auto tok_sorted = tok_flat.index_select(0, order);
  auto gate_sorted = gate_flat.index_select(0, order);
  auto counts_t = torch::bincount(e_flat, {}, E).to(torch::kCPU);
  const int64_t* counts = counts_t.data_ptr<int64_t>();
  const int64_t C = static_cast<int64_t>(std::ceil(options_.capacity * static_cast<double>(k * T) /
                                                   static_cast<double>(E) - 1e-9));
  last_capacity_ = C;

  auto y = torch::zeros({T, d_}, xt.options());
  int64_t start = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t c = std::min(counts[e], C);
    last_load_[static_cast<size_t>(e)] = c;
    last_dropped_ += counts[e] - c;
    if (c > 0) {
      auto ti = tok_sorted.slice(0, start, start + c);
      auto h = ops::gelu(cerebra::linear(in_[static_cast<size_t>(e)], xt.index_select(0, ti)));
      auto ye = cerebra::linear(out_[static_cast<size_t>(e)], h) * gate_sorted.slice(0, start, start + c).unsqueeze(1);
      y.index_add_(0, ti, ye);
    }
    start += counts[e];
  }
  if (!rows.defined()) return y.view_as(x);
  return torch::zeros_like(flat).index_copy(0, rows, y).view_as(x);
}

}  // namespace cerebra
