// The Cerebra layer: router + compressor + full / compressed attention paths, the compute hooks of
// SequenceMixer, and the registration as mixer "cerebra". Design and FLOP formulas: include/cerebra/cerebra_layer.h.
#include "cerebra/models/cerebra_layer.h"
#include "cerebra/models/cerebra_causal.h"
#include "cerebra/models/quant.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "cerebra/models/pruning.h"
#include "cerebra/ops/attention.h"

namespace cerebra {

namespace {

double masked_value(const torch::Tensor& t) { return t.scalar_type() == torch::kHalf ? -6.0e4 : -1.0e9; }

// scores: (..., L) and allowed: broadcastable bool -> softmax over the allowed entries. A row with nothing allowed
// becomes uniform (finite), never NaN: such rows belong to padding and are never read.
torch::Tensor masked_softmax(const torch::Tensor& scores, const torch::Tensor& allowed) {
  return torch::softmax(scores.masked_fill(allowed.logical_not(), masked_value(scores)), -1);
}

// t: (B, L, h·e) -> (B, h, L, e)
torch::Tensor split_heads(const torch::Tensor& t, int64_t h) {
  const int64_t B = t.size(0), L = t.size(1), e = t.size(2) / h;
  return t.view({B, L, h, e}).permute({0, 2, 1, 3});
}

// t: (B, h, L, e) -> (B, L, h·e)
torch::Tensor merge_heads(const torch::Tensor& t) {
  const int64_t B = t.size(0), h = t.size(1), L = t.size(2), e = t.size(3);
  return t.permute({0, 2, 1, 3}).reshape({B, L, h * e});
}

// x: (B, n, c), rows: (B, R) int64 -> (B, R, c)
torch::Tensor gather_rows(const torch::Tensor& x, const torch::Tensor& rows) {
  return x.gather(1, rows.unsqueeze(-1).expand({rows.size(0), rows.size(1), x.size(2)}));
}

}  // namespace

CerebraLayer::CerebraLayer(const CerebraOptions& o) : opts_(o) {
  opts_.validate();
  const int64_t d = o.d_model, dc = o.compressed_width();
  router = register_module("router", CerebraRouter(d));
  if (o.mode == RoutingMode::kAdaptive) {
    // Gate-decided counts start from dense: P(selected) = σ(z) under the training noise, 95% at z = 3, so the
    // blocks learn before λ removes work (from σ(0) = ½, half the tokens would be dropped at random from the start).
    torch::NoGradGuard g;
    router->score->bias.fill_(kDenseStartBias);
  }
  compressor = register_module("compressor", CerebraCompressor(opts_));
  q_proj = register_module("q_proj", torch::nn::Linear(d, d));
  kv_proj = register_module("kv_proj", torch::nn::Linear(d, 2 * d));
  out_proj = register_module("out_proj", torch::nn::Linear(d, d));
  qc_proj = register_module("qc_proj", torch::nn::Linear(d, dc));
  kvc_proj = register_module("kvc_proj", torch::nn::Linear(d, 2 * dc));
  kvm_proj = register_module("kvm_proj", torch::nn::Linear(dc, 2 * dc));
  up_proj = register_module("up_proj", torch::nn::Linear(dc, d));
}

void CerebraLayer::set_temperature(double tau) {
  TORCH_CHECK(tau > 0, "cerebra: temperature must be > 0, got ", tau);
  opts_.tau = tau;
}

torch::Tensor CerebraLayer::aux_loss() {
  if (!rec_loss_.defined() || opts_.rec_weight <= 0) return {};
  return rec_loss_ * opts_.rec_weight;
}

// ---- full path -------------------------------------------------------------------------------------------------

// x: (B, n, d), key_mask: (B, n), rows: (B, R) or undefined (all n) -> (B, R, d), before the output projection.
torch::Tensor CerebraLayer::full_path(const torch::Tensor& x, const torch::Tensor& key_mask,
                                      const torch::Tensor& rows) {
  const int64_t B = x.size(0), n = x.size(1), h = opts_.full_head_count(), e = opts_.d_model / opts_.n_heads;
  auto xq = rows.defined() ? gather_rows(x, rows) : x;                                        // (B, R, d)
  auto q = split_heads(cerebra::linear(q_proj, xq), h) * (1.0 / std::sqrt(static_cast<double>(e)));  // (B, h, R, e)
  auto kv = cerebra::linear(kv_proj, x).chunk(2, -1);
  auto k = split_heads(kv[0], h), v = split_heads(kv[1], h);  // (B, h, n, e)
  auto p = masked_softmax(torch::matmul(q, k.transpose(-2, -1)), key_mask.view({B, 1, 1, n}));  // (B, h, R, n)
  auto y = merge_heads(torch::matmul(p, v));  // (B, R, D_f)
  if (!full_cols_.defined()) return y;
  return torch::zeros({B, y.size(1), opts_.d_model}, y.options()).index_copy(2, full_cols_, y);  // pruned heads: 0
}

// Reference: every query and the full n×n score matrix, then the requested rows.
torch::Tensor CerebraLayer::full_path_ref(const torch::Tensor& x, const torch::Tensor& key_mask,
                                          const torch::Tensor& rows) {
  const int64_t B = x.size(0), n = x.size(1), h = opts_.full_head_count(), e = opts_.d_model / opts_.n_heads;
  auto q = split_heads(cerebra::linear(q_proj, x), h) / std::sqrt(static_cast<double>(e));
  auto kv = cerebra::linear(kv_proj, x).chunk(2, -1);
  auto k = split_heads(kv[0], h), v = split_heads(kv[1], h);
  auto p = masked_softmax(torch::matmul(q, k.transpose(-2, -1)), key_mask.view({B, 1, 1, n}));
  auto y = merge_heads(torch::matmul(p, v));  // (B, n, D_f)
  if (full_cols_.defined()) y = torch::zeros({B, n, opts_.d_model}, y.options()).index_copy(2, full_cols_, y);
  return rows.defined() ? gather_rows(y, rows) : y;
}

// ---- compressed path -------------------------------------------------------------------------------------------

// x: (B, n, d), key_mask: (B, n), rows: (B, R) or undefined (all n), mem: (B, m, d_c) -> (B, R, d).
// Each row's query attends, in one softmax, over its window |i − j| ≤ ⌊w/2⌋ and the m memory slots.
// The window is computed in blocks: the positions are cut into blocks of c = CerebraOptions::window_block(),
// each block's c queries meet its c + 2⌊w/2⌋ neighbouring keys (one small GEMM per block and head) and the band
// mask keeps each query's own window. Queries, memory attention and d_c -> d run for the requested rows only;
// in the block GEMMs the other positions (the routed tokens) carry zero queries and their results are dropped.
torch::Tensor CerebraLayer::comp_path(const torch::Tensor& x, const torch::Tensor& key_mask, const torch::Tensor& rows_in,
                                      const CompressedMemory& mem) {
  const int64_t B = x.size(0), n = x.size(1), h = opts_.n_heads, dc = opts_.compressed_width(), e = dc / h;
  const int64_t m = mem.slots.size(1), hw = opts_.window / 2, c = opts_.window_block();
  const int64_t nb = (n + c - 1) / c, np = nb * c, span = c + 2 * hw;
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  auto rows = rows_in.defined() ? rows_in : torch::arange(n, long_opts).unsqueeze(0).expand({B, n});  // (B, R)
  const int64_t R = rows.size(1);
  auto row_index = [&](int64_t width) { return rows.view({B, 1, R, 1}).expand({B, h, R, width}); };

  auto xq = rows_in.defined() ? gather_rows(x, rows) : x;
  auto q = split_heads(cerebra::linear(qc_proj, xq), h) * (1.0 / std::sqrt(static_cast<double>(e)));  // (B, h, R, e)
  auto kvc = cerebra::linear(kvc_proj, x).chunk(2, -1);                                               // (B, n, d_c) each
  auto kvm = cerebra::linear(kvm_proj, mem.slots).chunk(2, -1);
  auto km = split_heads(kvm[0], h), vm = split_heads(kvm[1], h);  // (B, h, m, e)

  // Window scores in blocks. Queries in position layout (B, h, nb, c, e), zero where no row asked for one.
  auto q_pos = torch::zeros({B, h, np, e}, q.options()).scatter(2, row_index(e), q).view({B, h, nb, c, e});
  // Keys of block b: positions b·c − hw … b·c + c + hw − 1, zero outside [0, n): (B, h, nb, e, span) and values
  // (B, h, nb, span, e).
  auto blocks = [&](const torch::Tensor& t) {  // (B, n, d_c) -> (B, nb, h, e, span)
    return torch::constant_pad_nd(t, {0, 0, hw, np - n + hw}).unfold(1, span, c).view({B, nb, h, e, span});
  };
  auto k_blk = blocks(kvc[0]).permute({0, 2, 1, 3, 4});
  auto v_blk = blocks(kvc[1]).permute({0, 2, 1, 4, 3});
  auto s_win = torch::matmul(q_pos, k_blk);  // (B, h, nb, c, span)
  // Key t of block b is position b·c − hw + t; query r of the block is position b·c + r: window ⇔ r ≤ t ≤ r + 2hw.
  auto r_idx = torch::arange(c, long_opts).view({c, 1}), t_idx = torch::arange(span, long_opts).view({1, span});
  auto band = (t_idx >= r_idx).logical_and(t_idx <= r_idx + 2 * hw);                                      // (c, span)
  auto key_ok = torch::constant_pad_nd(key_mask, {hw, np - n + hw}).unfold(1, span, c);                  // (B, nb, span)
  auto allowed_win = band.view({1, 1, c, span}).logical_and(key_ok.unsqueeze(2)).unsqueeze(1);           // (B,1,nb,c,span)

  // Memory scores of the rows, placed at their positions so that one softmax covers window and memory.
  auto s_mem = torch::matmul(q, km.transpose(-2, -1));  // (B, h, R, m)
  auto s_mem_pos = torch::zeros({B, h, np, m}, s_mem.options()).scatter(2, row_index(m), s_mem).view({B, h, nb, c, m});
  auto allowed_mem = mem.slot_mask.view({B, 1, 1, 1, m}).expand({B, 1, nb, c, m});
  auto p = masked_softmax(torch::cat({s_win, s_mem_pos}, -1), torch::cat({allowed_win, allowed_mem}, -1));

  auto o_win = torch::matmul(p.narrow(-1, 0, span), v_blk).view({B, h, np, e}).gather(2, row_index(e));  // (B,h,R,e)
  auto p_mem = p.narrow(-1, span, m).reshape({B, h, np, m}).gather(2, row_index(m));                    // (B,h,R,m)
  auto o = o_win + torch::matmul(p_mem, vm);
  return cerebra::linear(up_proj, merge_heads(o));  // (B, R, d)
}

// Reference: every query against all n keys with a band mask |i − j| ≤ ⌊w/2⌋, plus the memory; then the rows.
torch::Tensor CerebraLayer::comp_path_ref(const torch::Tensor& x, const torch::Tensor& key_mask,
                                          const torch::Tensor& rows, const CompressedMemory& mem) {
  const int64_t B = x.size(0), n = x.size(1), h = opts_.n_heads, dc = opts_.compressed_width(), e = dc / h;
  const int64_t m = mem.slots.size(1), hw = opts_.window / 2;
  auto q = split_heads(cerebra::linear(qc_proj, x), h) / std::sqrt(static_cast<double>(e));  // (B, h, n, e)
  auto kvc = cerebra::linear(kvc_proj, x).chunk(2, -1);
  auto kc = split_heads(kvc[0], h), vc = split_heads(kvc[1], h);
  auto kvm = cerebra::linear(kvm_proj, mem.slots).chunk(2, -1);
  auto km = split_heads(kvm[0], h), vm = split_heads(kvm[1], h);
  auto i = torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
  auto band = (i.view({n, 1}) - i.view({1, n})).abs() <= hw;                                      // (n, n)
  auto allowed_loc = band.view({1, 1, n, n}).logical_and(key_mask.view({B, 1, 1, n}));          // (B, 1, n, n)
  auto allowed = torch::cat({allowed_loc, mem.slot_mask.view({B, 1, 1, m}).expand({B, 1, n, m})}, -1);
  auto s = torch::cat({torch::matmul(q, kc.transpose(-2, -1)), torch::matmul(q, km.transpose(-2, -1))}, -1);
  auto p = masked_softmax(s, allowed);
  auto o = torch::matmul(p.narrow(-1, 0, n), vc) + torch::matmul(p.narrow(-1, n, m), vm);  // (B, h, n, e)
  auto y = merge_heads(o);
  return cerebra::linear(up_proj, rows.defined() ? gather_rows(y, rows) : y);
}

// ---- forward ---------------------------------------------------------------------------------------------------

torch::Tensor CerebraLayer::forward(const torch::Tensor& x, const torch::Tensor& mask_in) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == opts_.d_model, "cerebra: x must be (B, n, ", opts_.d_model, "), got ",
              x.sizes());
  const int64_t B = x.size(0), n = x.size(1), d = opts_.d_model;
  TORCH_CHECK(n > 0, "cerebra: empty sequence");
  torch::Tensor mask = mask_in;
  if (mask.defined()) {
    TORCH_CHECK(mask.sizes() == torch::IntArrayRef({B, n}), "cerebra: mask must be (B, n) = (", B, ", ", n,
                "), got ", mask.sizes());
    mask = mask.to(torch::kBool);
  } else {
    mask = torch::ones({B, n}, torch::TensorOptions().dtype(torch::kBool).device(x.device()));
  }
  rec_loss_ = torch::Tensor();

  if (dense_) {
    // Warm-up: plain multi-head attention, router and compressor off.
    routing_ = Routing{};
    auto y = cerebra::linear(out_proj, opts_.use_reference ? full_path_ref(x, mask, {}) : full_path(x, mask, {}));
    ffn_tokens_ = ffn_scale_ = torch::Tensor();  // the feed-forward runs on every token
    realised_seq_.assign(static_cast<size_t>(B), cerebra_flops(opts_, n, /*dense=*/true));
    realised_ = static_cast<double>(B) * realised_seq_.front();
    expected_ = torch::tensor(realised_, torch::TensorOptions().dtype(torch::kDouble).device(x.device()));
    const double valid = mask.sum().item<double>();
    stats_ = {{"gate_mean", 1.0}, {"tokens_routed", valid / std::max<int64_t>(B, 1)}, {"memory_slots", 0.0}};
    return y;
  }

  routing_ = router->forward(x, mask, opts_, is_training() ? noise_scale() : 0.0);
  const Routing& r = routing_;
  const bool skip = opts_.unrouted == Unrouted::kSkip;
  const bool packed = opts_.mode == RoutingMode::kAdaptive;
  const int64_t full_rows = r.full_rows, comp_rows = skip ? 0 : n - r.comp_start;
  const bool want_rec = is_training() && opts_.rec_weight > 0;
  CompressedMemory mem;
  if (comp_rows > 0) {
    mem = compressor->forward(x, mask, want_rec);
    rec_loss_ = mem.rec_loss;
  }
  auto full_fn = [&](const torch::Tensor& rows) {
    return opts_.use_reference ? full_path_ref(x, mask, rows) : full_path(x, mask, rows);
  };
  auto comp_fn = [&](const torch::Tensor& rows) {
    return opts_.use_reference ? comp_path_ref(x, mask, rows, mem) : comp_path(x, mask, rows, mem);
  };
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(x.device());
  // Rank order back to sequence order: position order[b, j] holds row j.
  auto to_positions = [&](const torch::Tensor& y_perm) {
    auto inv = torch::empty_like(r.order).scatter_(1, r.order, torch::arange(n, long_opts).unsqueeze(0).expand({B, n}));
    return gather_rows(y_perm, inv);
  };

  torch::Tensor y;  // (B, n, d) before the output projection
  if (opts_.mode == RoutingMode::kSoft) {
    auto g = r.gates.unsqueeze(-1);
    y = g * full_fn({}) + (1.0 - g) * comp_fn({});
  } else {
    // Rows in rank order: [0, full_rows) run the full path, [comp_start, n) the compressed path; where both ran
    // (threshold, unequal counts in a batch) use_full picks. Straight-through gate factors carry the gradient.
    // adaptive: the full path runs packed over the selected tokens of the whole batch instead.
    // With unrouted = skip the selected tokens' outputs are scaled by their gate after the output projection
    // (below), so the full path here carries no factor.
    auto g = r.gates.gather(1, r.order);  // (B, n) in rank order
    auto g_st = (g - g.detach()).unsqueeze(-1);
    auto zeros = [&](int64_t rows) { return torch::zeros({B, rows, d}, x.options()); };
    torch::Tensor full_perm = zeros(n), comp_perm = zeros(n);
    if (!packed && full_rows > 0) {
      auto yf = full_fn(r.order.narrow(1, 0, full_rows));
      if (!skip) yf = yf * (1.0 + g_st.narrow(1, 0, full_rows));
      full_perm = full_rows < n ? torch::cat({yf, zeros(n - full_rows)}, 1) : yf;
    }
    if (comp_rows > 0) {
      auto yc = comp_fn(r.order.narrow(1, r.comp_start, comp_rows)) * (1.0 - g_st.narrow(1, r.comp_start, comp_rows));
      comp_perm = r.comp_start > 0 ? torch::cat({zeros(r.comp_start), yc}, 1) : yc;
    }
    if (packed) {
      y = full_path_packed(x, mask, r);
      if (comp_rows > 0) y = torch::where(r.selected.unsqueeze(-1), y, to_positions(comp_perm));
    } else {
      y = to_positions(torch::where(r.use_full.unsqueeze(-1), full_perm, comp_perm));
    }
  }

  // Realised cost: the rows each sequence ran (padded rows of a rectangular block included).
  const CerebraCost c = cerebra_cost(opts_, n);
  const auto sel_counts = r.selected.sum(1).to(torch::kLong).cpu();
  const auto* sel_b = sel_counts.data_ptr<int64_t>();
  const auto lengths = mask.sum(1).to(torch::kLong).cpu();
  const auto* len_b = lengths.data_ptr<int64_t>();
  double realised = 0;
  realised_seq_.assign(static_cast<size_t>(B), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    double& rb = realised_seq_[static_cast<size_t>(b)];
    if (skip) {
      rb = packed ? c.executed_mod(sel_b[b])
                  : c.router + (full_rows > 0 ? c.full_shared + static_cast<double>(full_rows) * c.per_full : 0.0) +
                        static_cast<double>(sel_b[b]) * (c.out_row + c.ffn_row);
    } else if (packed) {
      rb = c.executed(0, comp_rows, want_rec && comp_rows > 0);
      if (sel_b[b] > 0) {  // the full path over the sequence's real tokens only
        const CerebraCost cl = cerebra_cost(opts_, len_b[b]);
        rb += cl.full_shared + static_cast<double>(sel_b[b]) * cl.per_full;
      }
    } else {
      rb = c.executed(full_rows, comp_rows, want_rec && comp_rows > 0);
    }
    realised += rb;
  }

  if (skip) {
    // Mixture-of-Depths: only the selected tokens get an output (and, in the backbone, the feed-forward).
    auto idx = r.selected.nonzero();
    auto bi = idx.select(1, 0), ii = idx.select(1, 1);
    auto out = torch::zeros({B, n, d}, x.options());
    // Each selected token's block output (attention here, its feed-forward in the backbone) is scaled by its gate
    // g >= 0.5, as in Mixture-of-Depths: the task loss tells the router how much a token gains from the block, and a
    // block that helps pulls its gates towards 1. (A straight-through factor of value 1 would leave the gates
    // without a restoring force: at a trained block dL/dscale = 0 on average, so the gates drift and, once a token
    // is unselected, no gradient brings it back.)
    if (idx.size(0) > 0)
      out = out.index_put({bi, ii}, cerebra::linear(out_proj, y.index({bi, ii})) *
                                        r.gates.index({bi, ii}).unsqueeze(-1).to(y.scalar_type()));
    ffn_tokens_ = r.selected;
    ffn_scale_ = r.gates;
    y = out;
  } else {
    y = cerebra::linear(out_proj, y);
  }
  record(mask, n, realised, comp_rows > 0, want_rec && comp_rows > 0);
  return y;
}

// Adaptive routing: the selected tokens of the whole batch, packed (no padding rows), attend over the real tokens
// of their own sequence (with unrouted = skip, as in Mixture-of-Depths, over the selected tokens of their sequence
// only). One GEMM for all their queries, one for the keys/values of the real tokens of the sequences with a
// selected token (skip: of the selected tokens), and one packed variable-length attention kernel call
// (ops::tiled_attention_packed): no padded row or key runs. -> (B, n, d) in sequence order, zero elsewhere.
torch::Tensor CerebraLayer::full_path_packed(const torch::Tensor& x, const torch::Tensor& key_mask, const Routing& r) {
  const int64_t B = x.size(0), n = x.size(1), d = opts_.d_model, h = opts_.full_head_count(), e = d / opts_.n_heads;
  auto out = torch::zeros({B, n, d}, x.options());
  auto idx = r.selected.nonzero();  // (R, 2) [b, i], sequence by sequence
  const int64_t R = idx.size(0);
  if (R == 0) return out;
  auto bi = idx.select(1, 0), ii = idx.select(1, 1);
  auto xs = x.index({bi, ii});
  auto heads = [&](const torch::Tensor& t) { return t.view({t.size(0), h, e}).transpose(0, 1); };  // -> (h, T, e)
  // (B, n) bool rows -> sequence offsets (B + 1) of their packed true entries
  auto offsets = [&](const torch::Tensor& rows) {
    auto cu = torch::zeros({B + 1}, torch::kLong);
    cu.narrow(0, 1, B).copy_(rows.sum(1).cumsum(0).cpu());
    return cu;
  };
  auto q = heads(cerebra::linear(q_proj, xs));
  const auto cu_q = offsets(r.selected);
  torch::Tensor k, v, cu_k;
  if (opts_.unrouted == Unrouted::kSkip) {
    auto kv = cerebra::linear(kv_proj, xs).chunk(2, -1);  // the selected tokens' keys and values
    k = heads(kv[0]), v = heads(kv[1]), cu_k = cu_q;
  } else {
    auto keys = key_mask.logical_and(r.selected.any(1, /*keepdim=*/true));  // real tokens of sequences with a query
    auto kidx = keys.nonzero();
    auto kv = cerebra::linear(kv_proj, x.index({kidx.select(1, 0), kidx.select(1, 1)})).chunk(2, -1);
    k = heads(kv[0]), v = heads(kv[1]), cu_k = offsets(keys);
  }
  auto y = ops::tiled_attention_packed(q, k, v, cu_q, cu_k, /*causal=*/false, 1.0 / std::sqrt(static_cast<double>(e)))
               .transpose(0, 1)
               .reshape({R, h * e});  // (R, D_f)
  if (full_cols_.defined()) y = torch::zeros({R, d}, y.options()).index_copy(1, full_cols_, y);  // pruned heads: 0
  if (opts_.unrouted == Unrouted::kSkip) return out.index_put({bi, ii}, y);  // gated after the output projection
  auto g = r.gates.index({bi, ii}).unsqueeze(-1);
  return out.index_put({bi, ii}, y * (1.0 + g - g.detach()));
}

// Realised and expected cost and the statistics of the forward that just ran.
void CerebraLayer::record(const torch::Tensor& mask, int64_t n, double realised, bool compressor_ran,
                          bool with_reconstruction) {
  const int64_t B = mask.size(0);
  const CerebraCost c = cerebra_cost(opts_, n);
  realised_ = realised;

  const auto maskd = mask.to(torch::kDouble);
  auto g = routing_.gates.to(torch::kDouble);
  if (opts_.unrouted == Unrouted::kSkip && opts_.mode == RoutingMode::kAdaptive) {
    // Mixture-of-Depths: a selected token costs its projections, output row and feed-forward, and its attention
    // products with the other selected tokens of its sequence (their count held fixed); the others nothing.
    auto rows = routing_.count.to(torch::kDouble).unsqueeze(1);  // (B, 1)
    expected_ = (g * (c.mod_row + c.out_row + c.ffn_row + 4.0 * rows * c.full_width) * maskd).sum() +
                static_cast<double>(B) * c.router;
  } else if (opts_.unrouted == Unrouted::kSkip) {
    // A selected token costs its full-path row, its output row and its feed-forward; the others nothing.
    expected_ = (g * (c.per_full + c.out_row + c.ffn_row) * maskd).sum() +
                static_cast<double>(B) * (c.router + c.full_shared);
  } else {
    double overhead = c.overhead() + (with_reconstruction ? c.reconstruction : 0.0);
    expected_ = ((g * (c.per_full - c.per_comp) + c.per_comp) * maskd).sum() + static_cast<double>(B) * overhead;
  }

  const double valid = maskd.sum().item<double>();
  stats_ = {{"gate_mean", valid > 0 ? (g.detach() * maskd).sum().item<double>() / valid : 0.0},
            {"tokens_routed", routing_.count.to(torch::kDouble).mean().item<double>()},
            {"memory_slots", compressor_ran ? static_cast<double>(c.m) : 0.0}};
}

// ---- structured pruning of the full path's heads ------------------------------------------------------------

std::vector<PrunableGroup> CerebraLayer::prunable_groups(int64_t n) const {
  // Per head (width e): query projection of each full-path row 2·d·e, both products 4·n·e per row, keys and values
  // of all n tokens 4·n·d·e. Full-path rows as flops(n) counts them: n in dense and soft mode, else min(k, n).
  const double N = static_cast<double>(n), d = static_cast<double>(opts_.d_model);
  const double e = static_cast<double>(opts_.d_model / opts_.n_heads);
  int64_t rows = n;
  if (!dense_ && opts_.mode == RoutingMode::kTopK) rows = std::min(opts_.topk, n);
  if (!dense_ && opts_.mode == RoutingMode::kThreshold) rows = std::min(opts_.k_max, n);
  const double per_head = static_cast<double>(rows) * (2.0 * d * e + 4.0 * N * e) + (rows > 0 ? 4.0 * N * d * e : 0.0);
  return {{"heads", "heads", opts_.full_head_count(), per_head}};
}

// Head j owns rows j·e.. of q_proj and of the key and value blocks of kv_proj (with their biases).
torch::Tensor CerebraLayer::unit_taylor(size_t) const {
  const int64_t h = opts_.full_head_count(), e = opts_.d_model / opts_.n_heads;
  auto q = grad_times_weight(q_proj->weight).sum(1) + grad_times_weight(q_proj->bias);     // (D_f)
  auto kv = grad_times_weight(kv_proj->weight).sum(1) + grad_times_weight(kv_proj->bias);  // (2 D_f)
  return q.view({h, e}).sum(1) + kv.view({2, h, e}).sum(2).sum(0);
}

void CerebraLayer::prune_units(size_t, const std::vector<int64_t>& keep) {
  torch::NoGradGuard ng;
  const int64_t h = opts_.full_head_count(), e = opts_.d_model / opts_.n_heads, df = h * e;
  q_proj = torch::nn::Linear(replace_module("q_proj", select_linear(q_proj, unit_columns(keep, e), {})));
  auto kv_rows = torch::cat({unit_columns(keep, e, 0), unit_columns(keep, e, df)});
  kv_proj = torch::nn::Linear(replace_module("kv_proj", select_linear(kv_proj, kv_rows, {})));
  // Columns of d (original head layout) the kept heads write.
  auto cols = full_cols_.defined() ? full_cols_.index_select(0, unit_columns(keep, e)) : unit_columns(keep, e);
  if (full_cols_.defined())
    full_cols_.set_(cols.clone());
  else
    full_cols_ = register_buffer("full_cols", cols);
  opts_.full_heads = static_cast<int64_t>(keep.size());
}

// A head whose values are zero writes zeros into its columns: what the pruned layer computes.
void CerebraLayer::mask_units(size_t, const std::vector<int64_t>& keep) {
  torch::NoGradGuard ng;
  const int64_t h = opts_.full_head_count(), e = opts_.d_model / opts_.n_heads, df = h * e;
  for (int64_t j = 0; j < h; ++j) {
    if (std::find(keep.begin(), keep.end(), j) != keep.end()) continue;
    kv_proj->weight.narrow(0, df + j * e, e).zero_();
    kv_proj->bias.narrow(0, df + j * e, e).zero_();
  }
}

namespace {
MixerRegistration reg(define_mixer<CerebraOptions>(
    "cerebra", CerebraOptions::keys(), &CerebraOptions::from_config,
    [](const MixerOptions& o, const CerebraOptions&) {
      const CerebraOptions c = CerebraOptions::from_mixer(o);
      if (c.causal) return std::shared_ptr<SequenceMixer>(std::make_shared<CausalCerebraLayer>(c));
      return std::shared_ptr<SequenceMixer>(std::make_shared<CerebraLayer>(c));
    }));
}  // namespace

}  // namespace cerebra
