// The causal Cerebra layer: top-k routing in training with a causal predictor for evaluation and generation, the
// full path over the past, the compressed path over a window and the memory of finished blocks, and step() for
// generation. Design and FLOP formulas: include/cerebra/models/cerebra_causal.h.
#include "cerebra/models/cerebra_causal.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "cerebra/models/quant.h"
#include "cerebra/ops/activations.h"

namespace cerebra {

namespace {

constexpr double kMasked = -1.0e9;

// sel: (B, n) bool -> rows (B, R): the positions with sel true in ascending order, R = the largest count, padded
// with arbitrary positions; valid (B, R): the row is one of them.
std::pair<torch::Tensor, torch::Tensor> rows_of(const torch::Tensor& sel) {
  const int64_t B = sel.size(0), n = sel.size(1);
  auto pos = torch::arange(n, torch::kLong).unsqueeze(0).expand({B, n});
  auto sorted = std::get<0>(torch::where(sel, pos, pos + n).sort(1));
  auto count = sel.sum(1);
  const int64_t R = B > 0 ? count.max().item<int64_t>() : 0;
  auto rows = torch::remainder(sorted.slice(1, 0, R), n);
  auto valid = torch::arange(R, torch::kLong).unsqueeze(0) < count.unsqueeze(1);
  return {rows, valid};
}

// q: (B, R, h, e), k and v: (B, R, K, h, e), allowed: (B, R, K) -> (B, R, h·e): each row's softmax over its K keys.
torch::Tensor attend_rows(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          const torch::Tensor& allowed) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  auto s = torch::einsum("brhe,brkhe->brhk", {q, k}) * scale;
  s = s.masked_fill(allowed.unsqueeze(2).logical_not(), kMasked);
  auto y = torch::einsum("brhk,brkhe->brhe", {torch::softmax(s, -1), v});
  return y.reshape({q.size(0), q.size(1), q.size(2) * q.size(3)});
}

// Appends t (B, 1, c) to the cached (B, L, c) under `key`, keeping the last `keep` entries (keep <= 0: all).
void append(MixerState& s, const std::string& key, const torch::Tensor& t, int64_t keep) {
  auto& c = s.tensors[key];
  c = c.defined() ? torch::cat({c, t}, 1) : t;
  if (keep > 0 && c.size(1) > keep) c = c.slice(1, c.size(1) - keep).clone();
}

}  // namespace

CausalCerebraLayer::CausalCerebraLayer(const CerebraOptions& o) : opts_(o) {
  opts_.validate();
  TORCH_CHECK(opts_.causal, "cerebra: CausalCerebraLayer needs causal options");
  const int64_t d = o.d_model, dc = o.compressed_width();
  router = register_module("router", CerebraRouter(d));
  pred_in = register_module("pred_in", torch::nn::Linear(d, predictor_width()));
  pred_out = register_module("pred_out", torch::nn::Linear(predictor_width(), 1));
  dwconv = register_module("dwconv",
                           torch::nn::Conv1d(torch::nn::Conv1dOptions(d, d, o.conv_kernel).groups(d)));
  slot_proj = register_module("slot_proj", torch::nn::Linear(d, dc));
  q_proj = register_module("q_proj", torch::nn::Linear(d, d));
  kv_proj = register_module("kv_proj", torch::nn::Linear(d, 2 * d));
  out_proj = register_module("out_proj", torch::nn::Linear(d, d));
  qc_proj = register_module("qc_proj", torch::nn::Linear(d, dc));
  kvc_proj = register_module("kvc_proj", torch::nn::Linear(d, 2 * dc));
  kvm_proj = register_module("kvm_proj", torch::nn::Linear(dc, 2 * dc));
  up_proj = register_module("up_proj", torch::nn::Linear(dc, d));
}

int64_t CausalCerebraLayer::predictor_width() const { return std::max<int64_t>(8, opts_.d_model / 4); }

void CausalCerebraLayer::set_temperature(double tau) {
  TORCH_CHECK(tau > 0, "cerebra: temperature must be > 0, got ", tau);
  opts_.tau = tau;
}

torch::Tensor CausalCerebraLayer::predictor_logits(const torch::Tensor& x) {
  return cerebra::linear(pred_out, ops::gelu(cerebra::linear(pred_in, x.detach()))).squeeze(-1);
}

CausalCerebraLayer::Costs CausalCerebraLayer::costs(int64_t n) const {
  const double N = static_cast<double>(n), d = static_cast<double>(opts_.d_model);
  const double dc = static_cast<double>(opts_.compressed_width()), hp = static_cast<double>(predictor_width());
  Costs c;
  c.base = 2.0 * N * d * d + (dense_ ? 0.0 : 2.0 * N * d + 2.0 * N * (d * hp + hp));
  c.full_shared = 4.0 * N * d * d;
  c.per_full = 2.0 * d * d + 4.0 * N * d;
  const BlockShape b = block_shape(n);
  // window keys/values and every position's query; the block GEMMs (scores and values) over all positions
  c.comp_shared = 6.0 * N * d * dc + 4.0 * static_cast<double>(b.blocks * b.c) *
                                         static_cast<double>(b.window_keys + b.memory_keys) * dc;
  if (b.slots > 0)  // the convolution and the slots, when a block is finished
    c.comp_shared += 2.0 * N * d * static_cast<double>(opts_.conv_kernel) +
                     static_cast<double>(b.slots) * (2.0 * d * dc + 4.0 * dc * dc);
  c.per_comp = 2.0 * dc * d;  // back to width d
  return c;
}

double CausalCerebraLayer::executed(int64_t n, int64_t full_rows, int64_t comp_rows) const {
  const Costs c = costs(n);
  double f = c.base;
  if (full_rows > 0) f += c.full_shared + static_cast<double>(full_rows) * c.per_full;
  if (comp_rows > 0) f += c.comp_shared + static_cast<double>(comp_rows) * c.per_comp;
  return f;
}

double CausalCerebraLayer::flops(int64_t n) const {
  if (dense_) return dense_attention_flops(n, opts_.d_model);
  const int64_t k = std::min(opts_.topk, n);
  return executed(n, k, n - k);
}

// x: (B, n, d), rows (B, R) -> (B, R, d): each row's query over the keys j <= its position.
torch::Tensor CausalCerebraLayer::full_path(const torch::Tensor& x, const torch::Tensor& rows) {
  const int64_t B = x.size(0), n = x.size(1), R = rows.size(1), h = opts_.n_heads, e = opts_.d_model / h;
  auto kv = cerebra::linear(kv_proj, x).view({B, n, 2, h, e});
  auto k = kv.select(2, 0).permute({0, 2, 1, 3}), v = kv.select(2, 1).permute({0, 2, 1, 3});  // (B, h, n, e)
  auto xq = x.gather(1, rows.unsqueeze(-1).expand({B, R, x.size(2)}));
  auto q = cerebra::linear(q_proj, xq).view({B, R, h, e}).permute({0, 2, 1, 3});              // (B, h, R, e)
  auto s = torch::matmul(q, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(e)));  // (B, h, R, n)
  auto future = torch::arange(n, torch::kLong).view({1, 1, 1, n}) > rows.view({B, 1, R, 1});
  s = s.masked_fill(future, kMasked);
  auto y = torch::matmul(torch::softmax(s, -1), v);  // (B, h, R, e)
  return y.permute({0, 2, 1, 3}).reshape({B, R, h * e});
}

int64_t CausalCerebraLayer::query_block() const {
  const int64_t P = opts_.memory_block_size();
  return (std::max<int64_t>(16, opts_.window) + P - 1) / P * P;
}

CausalCerebraLayer::BlockShape CausalCerebraLayer::block_shape(int64_t n) const {
  BlockShape b;
  b.c = query_block();
  b.blocks = (n + b.c - 1) / b.c;
  b.window_keys = b.c + opts_.window - 1;
  b.slots = n / opts_.memory_block_size();
  const int64_t M = opts_.memory_max > 0 ? std::min(opts_.memory_max, b.slots) : b.slots;
  b.memory_keys = b.slots > 0 ? M + b.c / opts_.memory_block_size() : 0;
  return b;
}

// x: (B, n, d), rows (B, R) -> (B, R, d): the compressed path of every position, computed in blocks of c query
// positions (one small GEMM per block and head against the keys any of its rows may see: the c + w − 1 window
// positions and the memory slots visible to its first to last row, masked per row), then gathered at `rows`.
torch::Tensor CausalCerebraLayer::comp_path(const torch::Tensor& x, const torch::Tensor& rows) {
  const int64_t B = x.size(0), n = x.size(1), d = x.size(2);
  const int64_t dc = opts_.compressed_width(), h = opts_.n_heads, ec = dc / h;
  const int64_t w = opts_.window, P = opts_.memory_block_size();
  const BlockShape bs = block_shape(n);
  const int64_t c = bs.c, nb = bs.blocks, np = nb * c, S = bs.slots;
  const int64_t M = opts_.memory_max > 0 ? std::min(opts_.memory_max, S) : S;

  auto q = torch::constant_pad_nd(cerebra::linear(qc_proj, x), {0, 0, 0, np - n}).view({B, nb, c, h, ec});
  auto row = (torch::arange(nb, torch::kLong) * c).view({nb, 1, 1}) + torch::arange(c, torch::kLong).view({1, c, 1});
  // Window keys of block j: positions j·c − (w − 1) + t; row i sees those in [i − w + 1, i] (and >= 0).
  auto wpos = (torch::arange(nb, torch::kLong) * c - (w - 1)).view({nb, 1}) +
              torch::arange(bs.window_keys, torch::kLong).view({1, bs.window_keys});  // (nb, Lw)
  auto kvc = cerebra::linear(kvc_proj, x);                                            // (B, n, 2dc)
  auto keys = kvc.index_select(1, wpos.clamp(0, n - 1).flatten()).view({B, nb, bs.window_keys, 2 * dc});
  auto wp = wpos.unsqueeze(1);  // (nb, 1, Lw)
  auto allowed = (wp >= 0).logical_and(wp <= row).logical_and(wp > row - w);  // (nb, c, Lw)
  if (bs.memory_keys > 0) {
    // Memory: row i sees the finished slots [⌊(i+1)/P⌋ − M, ⌊(i+1)/P⌋); block j gathers from its first row's lower
    // bound on, M + c/P slots.
    auto hx = dwconv->forward(torch::constant_pad_nd(x.transpose(1, 2), {opts_.conv_kernel - 1, 0}));  // (B, d, n)
    auto blocks = hx.transpose(1, 2).slice(1, 0, S * P).reshape({B, S, P, d}).mean(2);            // (B, S, d)
    auto kvm = cerebra::linear(kvm_proj, cerebra::linear(slot_proj, blocks));                      // (B, S, 2dc)
    auto first = torch::div(torch::arange(nb, torch::kLong) * c + 1, P, "floor") - M;             // (nb)
    auto spos = first.view({nb, 1}) + torch::arange(bs.memory_keys, torch::kLong).view({1, bs.memory_keys});
    keys = torch::cat({keys, kvm.index_select(1, spos.clamp(0, S - 1).flatten())
                                 .view({B, nb, bs.memory_keys, 2 * dc})}, 2);
    auto finished = torch::div(row + 1, P, "floor");  // (nb, c, 1)
    auto sp = spos.unsqueeze(1);                       // (nb, 1, Lm)
    allowed = torch::cat({allowed, (sp >= 0).logical_and(sp < S).logical_and(sp < finished)
                                       .logical_and(sp >= finished - M)}, 2);
  }
  const int64_t K = keys.size(2);
  auto kv = keys.view({B, nb, K, 2, h, ec});
  const double scale = 1.0 / std::sqrt(static_cast<double>(ec));
  auto sc = torch::einsum("bjrhe,bjkhe->bjhrk", {q, kv.select(3, 0)}) * scale;  // (B, nb, h, c, K)
  sc = sc.masked_fill(allowed.view({1, nb, 1, c, K}).logical_not(), kMasked);
  auto y = torch::einsum("bjhrk,bjkhe->bjrhe", {torch::softmax(sc, -1), kv.select(3, 1)}).reshape({B, np, dc});
  auto yr = y.gather(1, rows.unsqueeze(-1).expand({B, rows.size(1), dc}));
  return cerebra::linear(up_proj, yr);
}

torch::Tensor CausalCerebraLayer::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == opts_.d_model, "cerebra: x must be (B, n, ", opts_.d_model, "), got ",
              x.sizes());
  const int64_t B = x.size(0), n = x.size(1);
  const torch::Tensor real = mask.defined() ? mask : torch::ones({B, n}, torch::kBool);
  // Padding follows the real tokens (as every task pads), so no real position sees a padded one.
  TORCH_CHECK(n < 2 || !real.slice(1, 1).logical_and(real.slice(1, 0, n - 1).logical_not()).any().item<bool>(),
              "cerebra: the causal layer needs padding after the real tokens of each sequence");
  stats_.clear();
  aux_ = torch::Tensor();
  torch::Tensor gates;
  if (dense_) {
    selected_ = torch::ones({B, n}, torch::kBool);
  } else {
    const bool training = is_training();
    const double noise = training ? router_noise_scale(opts_.gumbel, exploration_) : 0.0;
    Routing r = router->forward(x, real, opts_, noise);  // padding never selected
    gates = r.gates;
    auto p = predictor_logits(x);
    auto predicted = (p > 0).logical_and(real);
    const auto realf = real.to(p.scalar_type());
    const double count = std::max(1.0, realf.sum().item<double>());
    if (training || opts_.eval_topk) {
      selected_ = r.selected;
      if (training)
        aux_ = (torch::binary_cross_entropy_with_logits(p, r.selected.to(p.scalar_type()), {}, {},
                                                         at::Reduction::None) * realf).sum() / count;
    } else {
      selected_ = predicted;
    }
    stats_["routed_fraction"] = selected_.sum().item<double>() / count;
    stats_["predictor_agreement"] = predicted.eq(r.selected).logical_and(real).sum().item<double>() / count;
    stats_["gate_mean"] = (gates * realf).sum().item<double>() / count;
  }

  auto [frows, fvalid] = rows_of(selected_);
  auto [crows, cvalid] = rows_of(selected_.logical_not());
  const int64_t Rf = frows.size(1), Rc = crows.size(1);
  auto y = torch::zeros_like(x);
  auto put = [&](const torch::Tensor& rows, const torch::Tensor& valid, torch::Tensor vals) {
    vals = vals * valid.unsqueeze(-1).to(vals.scalar_type());  // padding rows add nothing
    y = y.scatter_add(1, rows.unsqueeze(-1).expand_as(vals), vals);
  };
  if (Rf > 0) {
    auto yf = full_path(x, frows);
    if (gates.defined()) {  // straight-through: forward value 1, gradient to the gate
      auto g = gates.gather(1, frows).unsqueeze(-1);
      yf = yf * (1.0 + g - g.detach());
    }
    put(frows, fvalid, yf);
  }
  if (Rc > 0) {
    auto yc = comp_path(x, crows);
    if (gates.defined()) {
      auto g = gates.gather(1, crows).unsqueeze(-1);
      yc = yc * (1.0 - g + g.detach());
    }
    put(crows, cvalid, yc);
  }
  realised_ = static_cast<double>(B) * executed(n, Rf, Rc);
  if (dense_) {
    expected_ = torch::Tensor();
  } else {
    const Costs c = costs(n);
    auto g = gates.to(torch::kFloat64);
    expected_ = (g * c.per_full + (1.0 - g) * c.per_comp).sum() +
                static_cast<double>(B) * (c.base + c.full_shared + c.comp_shared);
  }
  return cerebra::linear(out_proj, y);
}

torch::Tensor CausalCerebraLayer::step(const torch::Tensor& x, MixerState& state) {
  TORCH_CHECK(dense_ || (!is_training() && !opts_.eval_topk), "cerebra: step() routes by the causal predictor, "
              "which is the eval-mode rule; call eval() first, with eval_routing = predictor (top-k reads the whole "
              "sequence)");
  TORCH_CHECK(x.dim() == 3 && x.size(2) == opts_.d_model, "cerebra: step x must be (B, m, ", opts_.d_model,
              "), got ", x.sizes());
  const int64_t B = x.size(0), m = x.size(1), d = opts_.d_model, h = opts_.n_heads, e = d / h;
  const int64_t dc = opts_.compressed_width(), ec = dc / h, w = opts_.window, P = opts_.memory_block_size();
  const int64_t kappa = opts_.conv_kernel;
  if (!state.has("conv")) {
    state.tensors["conv"] = torch::zeros({B, kappa - 1, d}, x.options());
    state.tensors["block"] = torch::zeros({B, d}, x.options());
  }
  std::vector<torch::Tensor> ys;
  for (int64_t t = 0; t < m; ++t) {
    auto xt = x.slice(1, t, t + 1);  // (B, 1, d)
    const int64_t pos = state.position;
    auto sel = dense_ ? torch::ones({B}, torch::kBool) : (predictor_logits(xt) > 0).view({B});
    append(state, "kv", cerebra::linear(kv_proj, xt), 0);
    if (!dense_) {
      append(state, "kvc", cerebra::linear(kvc_proj, xt), w);
      auto buf = torch::cat({state.tensors["conv"], xt}, 1);  // (B, κ, d)
      state.tensors["conv"] = buf.slice(1, 1).clone();
      auto& block = state.tensors["block"];
      block = block + dwconv->forward(buf.transpose(1, 2)).squeeze(-1);
      if ((pos + 1) % P == 0) {
        auto slot = cerebra::linear(kvm_proj, cerebra::linear(slot_proj, block / static_cast<double>(P)));
        append(state, "kvm", slot.unsqueeze(1), opts_.memory_max);
        block = torch::zeros_like(block);
      }
    }
    const bool any_full = sel.any().item<bool>(), any_comp = !sel.all().item<bool>();
    torch::Tensor yt = torch::zeros({B, d}, x.options());
    if (any_full) {
      const auto& kv = state.tensors["kv"];  // (B, pos + 1, 2d)
      const int64_t L = kv.size(1);
      auto kvh = kv.view({B, L, 2, h, e});
      auto q = cerebra::linear(q_proj, xt).view({B, 1, h, e});
      auto yf = attend_rows(q, kvh.select(2, 0).unsqueeze(1), kvh.select(2, 1).unsqueeze(1),
                            torch::ones({B, 1, L}, torch::kBool)).view({B, d});
      yt = torch::where(sel.unsqueeze(-1), yf, yt);
    }
    if (any_comp) {
      auto keys = state.tensors["kvc"];
      if (state.has("kvm")) keys = torch::cat({keys, state.tensors["kvm"]}, 1);
      const int64_t K = keys.size(1);
      auto kvh = keys.view({B, 1, K, 2, h, ec});
      auto q = cerebra::linear(qc_proj, xt).view({B, 1, h, ec});
      auto yc = attend_rows(q, kvh.select(3, 0), kvh.select(3, 1), torch::ones({B, 1, K}, torch::kBool));
      yc = cerebra::linear(up_proj, yc).view({B, d});
      yt = torch::where(sel.unsqueeze(-1), yt, yc);
    }
    ys.push_back(yt.unsqueeze(1));
    state.position += 1;
  }
  return cerebra::linear(out_proj, torch::cat(ys, 1));
}

}  // namespace cerebra
