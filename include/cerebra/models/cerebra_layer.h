// The Cerebra layer (SPEC §2–3, paper §3.1–3.3): a learned router sends a few tokens through exact softmax
// attention over the whole sequence and every other token through a cheap compressed path (a local window plus a
// small learned memory of the sequence, in a narrower width). Registered as the sequence mixer "cerebra".
//
//   x: (B, n, d), mask: (B, n) bool (true = real token) -> y: (B, n, d)        (non-causal)
//
// Pieces
//   Router      z_i = x_i·w + b; gate g_i = σ((z_i + a·ε_i)/τ), ε_i ~ Logistic(0, 1) in training (binary-concrete),
//               0 in evaluation. The noise scale a: `gumbel` on = 1, off = 0, anneal = 1 − the λ ramp's progress
//               (exploration while λ ramps, a deterministic router after it; none without a ramp; 1 for a layer
//               used outside the trainer's schedule). Tokens are ranked by (z_i + ε_i) with a stable sort, so equal
//               scores go to the lower index; padding ranks last and is never routed. Initially w ~ N(0, 0.02²) and
//               b = 0, or kDenseStartBias under adaptive routing (start dense).
//                 soft      every token takes both paths: y_i = g_i·y_full,i + (1−g_i)·y_comp,i.
//                 topk      the min(k, valid_b) highest-ranked real tokens of sequence b take the full path.
//                 threshold real tokens with g_i ≥ 0.5 take the full path, at most k_max per sequence (best first).
//                 adaptive  as threshold, but each sequence runs its own count: the selected tokens of the whole
//                           batch are packed end to end (no padding rows) and attend by one packed variable-length
//                           kernel call (ops::tiled_attention_packed) over their own sequence's real tokens
//                           (unrouted = skip: over the selected tokens of their sequence only).
//               Straight-through in topk/threshold: the selection s_i ∈ {0,1} is hard in the forward pass and
//                 y_i = s_i·y_full,i·(1 + g_i − sg(g_i)) + (1−s_i)·y_comp,i·(1 − g_i + sg(g_i))
//               (sg = stop-gradient). The forward value is exactly the hard mixture; the router gradient is
//               ∂L/∂g_i = ⟨∂L/∂y_i, y_full,i⟩ for routed tokens (what Mixture-of-Depths gets by multiplying the routed
//               output by its router weight) and −⟨∂L/∂y_i, y_comp,i⟩ for the others (symmetric), i.e. the soft
//               mixture's gradient with the path that did not run replaced by zero.
//               unrouted = skip (Mixture-of-Depths): a selected token's block output (its attention after the output
//               projection, and its feed-forward) is multiplied by g_i itself (g_i ≥ 0.5 when selected by
//               threshold), so the router gets ∂L/∂g_i = ⟨∂L/∂y_i, y_i/g_i⟩ with a restoring force: a block that
//               helps pulls its gates towards 1 (a factor of value 1 has ∂L/∂scale ≈ 0 at a trained block, and the
//               gates drift until no token is routed, even at λ = 0).
//   Compressor  X → X̃ (B, m, d_c), m = min(⌈r·n⌉, memory_max) (memory_max ≤ 0: unbounded, cost quadratic in n),
//               d_c = ⌈s·d⌉ rounded up to a multiple of n_heads. n is the padded length of the batch.
//                 conv      depthwise conv (kernel `conv_kernel`, stride 1) over the sequence, masked mean pooling over
//                           m contiguous segments of P = ⌈n/m⌉ tokens (a slot whose segment is all padding is
//                           masked out), then a linear d → d_c.
//                 attnpool  m learned queries (a bank of memory_max, or `pool_queries` when unbounded; the first m are
//                           used, linearly resampled when m exceeds the bank) attend, multi-head, over the real tokens
//                           (keys = values = x), then a linear d → d_c.
//                 hybrid    the depthwise conv, then the attention pooling over its output.
//               Reconstruction (training, rec_weight > 0): up(X̃) = linear d_c → d per slot, spread back to tokens by
//               segment (conv) or by the pooling weights normalised over slots (attnpool/hybrid);
//               ℓ_rec = mean over real tokens of ‖x_i − up(X̃)_i‖²/d (x detached); aux_loss() = rec_weight·ℓ_rec.
//   Full path   the routed rows are gathered; only they compute queries (d → d); exact multi-head softmax over
//               the keys/values (d → 2d) of all real tokens: k·n·d work, never n².
//   Compressed  the other rows are gathered; queries d → d_c; each attends, multi-head in width d_c, jointly (one
//   path        softmax) over its window |i − j| ≤ ⌊w/2⌋ (2·⌊w/2⌋+1 tokens; keys/values d → 2d_c of all tokens;
//               out-of-range and padded keys masked) and the m memory slots (keys/values d_c → 2d_c); then d_c → d.
//               The window is computed in blocks: positions are cut into blocks of c = max(16, 2⌊w/2⌋); each
//               block's c queries meet the block's c + 2⌊w/2⌋ neighbouring keys in one small GEMM per head, and a band
//               mask keeps each query's own window: O(n·(c + w)·d_c), no n×n matrix. The block GEMMs cover every
//               position (routed positions hold zero queries and their results are dropped), so their cost is
//               shared, not per row.
//   Output      both paths write into (B, n, d), then one output projection d → d. The feed-forward block and the
//               residuals belong to the surrounding backbone.
//   Dense mode  set_dense(true): every token on the full path, router and compressor off: plain multi-head
//               attention (the warm-up epochs of the recipe).
//
// FLOPs (2 per multiply-add of matmul-class ops; element-wise work, softmax and gathers are not counted; the same
// convention as cerebra::FlopCounter, which the tests hold this arithmetic to). Per sequence of padded length n,
// with d_c, m = memory slots, κ = conv_kernel, window block c = max(16, 2⌊w/2⌋), span S = c + 2⌊w/2⌋ and
// n_c = ⌈n/c⌉·c (positions padded to whole blocks):
//   per routed query     c_full = 2d² + 4·n·d                       (query proj, q·Kᵀ, P·V)
//   per compressed query c_comp = 4·d·d_c + 4·m·d_c                (query proj, memory q·Kᵀ and P·V, d_c → d)
//   router               2·n·d
//   compressor           conv: 2·n·d·κ + 2·m·d·d_c;  attnpool: 4·m·n·d + 2·m·d·d_c;
//                        hybrid: 2·n·d·κ + 4·m·n·d + 2·m·d·d_c
//   full-path keys/vals  4·n·d²        (only when at least one row takes the full path)
//   compressed shared    4·n·d·d_c + 4·m·d_c² + 4·n_c·S·d_c  (window keys/values, memory keys/values, the block
//                        GEMMs of the window; only when at least one row takes the compressed path, as the
//                        compressor itself)
//   output projection    2·n·d²
//   reconstruction       2·m·d_c·d (+ 2·n·m·d for attnpool/hybrid), training with rec_weight > 0 only
// Realised cost of one forward = Σ_b [R_full·c_full + R_comp·c_comp + overheads], where R_full/R_comp are the rows
// that actually ran through each path (topk: min(k, n) and n − min(k, n); threshold in a batch: the largest routed
// count and n minus the smallest, because rows are computed as rectangular blocks; soft: n and n). Padded rows
// that run are counted: realised means executed. Adaptive: sequence b with R_b selected tokens and L_b real ones
// runs R_b·(2d² + 4·L_b·d) + 4·L_b·d² on its full path (n − R_b compressed rows), nothing for padding. Dense mode: 8·n·d² + 4·n²·d, the dense multi-head attention cost.
// Expected cost (differentiable, paper §3.1) = Σ_b Σ_{real i} [g_i·c_full + (1−g_i)·c_comp] + Σ_b overheads; with
// hard gates that match the selection and no padding it equals the realised cost (topk, threshold).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "cerebra/models/mixer.h"

namespace cerebra {

enum class RoutingMode { kSoft = 0, kTopK = 1, kThreshold = 2, kAdaptive = 3 };
// What a token the router does not select gets: the compressed path, or nothing (Mixture-of-Depths: it skips the
// block, attention and feed-forward, and keeps its residual).
enum class Unrouted { kCompressed = 0, kSkip = 1 };
enum class CompressorKind { kConv = 0, kAttnPool = 1, kHybrid = 2 };
// Logistic noise on the router in training: never, always (scale 1), or annealed along the λ ramp.
enum class RouterNoise { kOff = 0, kOn = 1, kAnneal = 2 };

RoutingMode parse_routing_mode(const std::string& name);        // "soft" | "topk" | "threshold" | "adaptive"
CompressorKind parse_compressor_kind(const std::string& name);  // "conv" | "attnpool" | "hybrid"
RouterNoise parse_router_noise(const std::string& name);        // "false" | "true" | "anneal"
std::string to_string(RoutingMode mode);
std::string to_string(CompressorKind kind);
std::string to_string(RouterNoise noise);

struct CerebraOptions {
  int64_t d_model = 64;
  int64_t n_heads = 4;
  RoutingMode mode = RoutingMode::kTopK;  // router_mode
  int64_t topk = 16;                      // k, tokens per sequence on the full path (topk mode)
  int64_t k_max = 64;                     // cap on routed tokens per sequence (threshold mode)
  // Floor on routed tokens per sequence (threshold, adaptive): the k_min best-scored real tokens take the full path
  // even with gates under 0.5, so the router keeps a task gradient when every gate has fallen (0 = none).
  int64_t k_min = 0;
  double tau = 1.0;                       // gate temperature τ
  RouterNoise gumbel = RouterNoise::kOn;  // logistic noise on the router in training
  CompressorKind compressor = CompressorKind::kConv;
  double compression_ratio = 0.5;         // r in (0, 1]
  double width_scale = 0.5;               // s in (0, 1]
  int64_t memory_max = 64;                // bound on m; <= 0 means unbounded (quadratic)
  int64_t window = 32;                    // w; the window holds 2·⌊w/2⌋+1 tokens
  double rec_weight = 0.0;                // α, weight of the reconstruction loss
  // cerebra_reference: compute both paths the plain way (every query against all n keys, band-masked
  // for the window), the same function as the fast paths; for tests. realised_flops() still reports the fast paths.
  bool use_reference = false;
  int64_t conv_kernel = 3;                // depthwise kernel of conv/hybrid (odd)
  int64_t pool_queries = 64;              // learned-query bank when memory_max <= 0
  // Heads of the full path kept by structured pruning (cerebra/pruning.h); 0 = all n_heads. The full path then
  // computes queries, keys and values only for those heads (width D_f = full_heads·d/n_heads instead of d) and its
  // output fills only their columns before the output projection.
  int64_t full_heads = 0;
  Unrouted unrouted = Unrouted::kCompressed;  // hard modes only
  // The causal form (MixerOptions::causal; cerebra/models/cerebra_causal.h): tokens per memory slot, 0 = ⌈1/r⌉.
  bool causal = false;
  int64_t memory_block = 0;
  bool eval_topk = false;  // eval_routing = topk: evaluate with top-k (reads the future; measures the predictor)
  // Set by a model that reads its output from the last token (the feature-token models' readout token): that token
  // is always selected, with gate 1 (it takes the full path in every hard mode and is charged as such).
  bool route_last = false;
  int64_t memory_block_size() const;
  // FLOPs per token of the block's feed-forward (set by the backbone); with unrouted = skip the layer runs it only for
  // its selected tokens and counts it in flops / realised / expected.
  double ffn_token_flops = 0;
  bool owns_feedforward() const { return unrouted == Unrouted::kSkip && ffn_token_flops > 0; }

  // The registered options (MixerOptions::own, defaults when empty) with d_model, n_heads and causal from the common
  // options. dropout is not used. Validated.
  static CerebraOptions from_mixer(const MixerOptions& o);
  // The layer's own config keys and their parse (the mixer registration); the options under those keys
  // (CerebraLayer::own_options).
  static std::vector<KeySpec> keys();
  static CerebraOptions from_config(const Config& config);
  nlohmann::json describe() const;
  void validate() const;  // throws with the offending field

  int64_t compressed_width() const;       // d_c
  int64_t memory_slots(int64_t n) const;  // m for padded length n
  int64_t window_keys() const;            // keys in a token's window: 2·⌊w/2⌋ + 1
  int64_t window_block() const;           // c = max(16, 2·⌊w/2⌋): query positions per window block
  int64_t pool_bank() const;              // learned queries of attnpool/hybrid
  int64_t full_head_count() const { return full_heads > 0 ? full_heads : n_heads; }
  int64_t full_width() const { return full_head_count() * (d_model / n_heads); }  // D_f
};

// Analytic forward FLOPs of one sequence of padded length n, split the way the expected-cost estimator needs it.
struct CerebraCost {
  int64_t n = 0, m = 0, d_c = 0, window_keys = 0;
  int64_t window_span = 0;    // keys per window block: c + 2⌊w/2⌋
  int64_t window_rows = 0;    // positions padded to whole blocks: ⌈n/c⌉·c
  double per_full = 0;        // one routed query
  double per_comp = 0;        // one compressed query
  double router = 0;
  double compressor = 0;
  double full_shared = 0;     // full-path keys/values of all n tokens
  double comp_shared = 0;     // window keys/values of all n tokens, memory keys/values, window block GEMMs
  double out_proj = 0;        // all n rows (unrouted = compressed)
  double out_row = 0;         // one row of the output projection
  double ffn_row = 0;         // one token's feed-forward when the layer owns its block's (unrouted = skip)
  double reconstruction = 0;  // training-only ℓ_rec

  // Shared costs of a forward in which both paths run (what the expected cost adds to the per-token terms).
  double overhead() const { return router + compressor + full_shared + comp_shared + out_proj; }
  // Cost of a forward that computes `full_rows` full-path rows and `comp_rows` compressed rows (shared parts of a
  // path are skipped when it has no rows), plus the reconstruction when `with_reconstruction`.
  double executed(int64_t full_rows, int64_t comp_rows, bool with_reconstruction = false) const;
  // unrouted = skip: `rows` selected tokens run the full path, the output projection and the feed-forward (the
  // keys/values of all n tokens once when rows > 0); the others nothing.
  // adaptive with unrouted = skip (Mixture-of-Depths): the `rows` selected tokens of a sequence attend among
  // themselves only: their queries, keys and values 6·d·D_f each, the products 4·rows·D_f each, output row and
  // feed-forward.
  double executed_mod(int64_t rows) const {
    const double r = static_cast<double>(rows);
    return router + r * (mod_row + out_row + ffn_row) + 4.0 * r * r * full_width;
  }
  double mod_row = 0;     // 6·d·D_f: one selected token's query, key and value projections
  double full_width = 0;  // D_f
  double executed_skip(int64_t rows) const {
    return router + (rows > 0 ? full_shared : 0.0) + static_cast<double>(rows) * (per_full + out_row + ffn_row);
  }
};

CerebraCost cerebra_cost(const CerebraOptions& o, int64_t n);
// Plain multi-head attention of the same shape (q, k, v, o projections and the n×n products): 8·n·d² + 4·n²·d.
// The normaliser that makes the compute penalty λ dimensionless.
double dense_attention_flops(int64_t n, int64_t d_model);
// flops(n) of the layer: dense → dense_attention_flops; soft → both paths for all n; topk → min(k, n) full rows;
// threshold → min(k_max, n) full rows (its upper bound).
double cerebra_flops(const CerebraOptions& o, int64_t n, bool dense = false);

// ---- router ----------------------------------------------------------------------------------------------------

// Routing decisions of one forward.
struct Routing {
  torch::Tensor gates;      // (B, n) float g_i in [0, 1]; 0 at padding; differentiable in the router
  torch::Tensor selected;   // (B, n) bool: real tokens on the full path (soft: g_i ≥ 0.5, for statistics only)
  torch::Tensor count;      // (B) int64: selected tokens per sequence
  torch::Tensor order;      // (B, n) int64: positions by descending score (stable; padding last). topk/threshold
  torch::Tensor use_full;   // (B, n) bool in rank order: the row's output comes from the full path. topk/threshold
  int64_t full_rows = 0;    // ranks [0, full_rows) compute the full path
  int64_t comp_start = 0;   // ranks [comp_start, n) compute the compressed path
};

// The router's training noise scale under `gumbel` = noise when the schedule's exploration is `exploration`.
inline double router_noise_scale(RouterNoise noise, double exploration) {
  return noise == RouterNoise::kOff ? 0.0 : noise == RouterNoise::kOn ? 1.0 : exploration;
}

// The router's initial bias under adaptive routing: σ(3) = 95% of the tokens selected at the start.
inline constexpr double kDenseStartBias = 3.0;

class CerebraRouterImpl : public torch::nn::Module {
 public:
  explicit CerebraRouterImpl(int64_t d_model);
  // x: (B, n, d), mask: (B, n) bool -> routing; logistic noise of scale `noise` on the scores (0 = none).
  Routing forward(const torch::Tensor& x, const torch::Tensor& mask, const CerebraOptions& o, double noise);
  torch::nn::Linear score{nullptr};  // d -> 1
};
TORCH_MODULE(CerebraRouter);

// ---- compressor ------------------------------------------------------------------------------------------------

struct CompressedMemory {
  torch::Tensor slots;      // (B, m, d_c)
  torch::Tensor slot_mask;  // (B, m) bool: slot summarises at least one real token
  torch::Tensor rec_loss;   // scalar ℓ_rec, or undefined when not requested
};

class CerebraCompressorImpl : public torch::nn::Module {
 public:
  explicit CerebraCompressorImpl(const CerebraOptions& o);
  // x: (B, n, d), mask: (B, n) bool -> memory of m = o.memory_slots(n) slots.
  CompressedMemory forward(const torch::Tensor& x, const torch::Tensor& mask, bool with_reconstruction);

  CerebraOptions opts;
  torch::nn::Conv1d dwconv{nullptr};  // conv, hybrid: depthwise d -> d
  torch::Tensor queries;              // attnpool, hybrid: (bank, d) learned pooling queries
  torch::nn::Linear proj{nullptr};    // d -> d_c
  torch::nn::Linear up{nullptr};      // d_c -> d (reconstruction)
};
TORCH_MODULE(CerebraCompressor);

// ---- the layer -------------------------------------------------------------------------------------------------

class CerebraLayer : public SequenceMixer {
 public:
  explicit CerebraLayer(const CerebraOptions& o);

  // x: (B, n, d), mask: (B, n) bool or undefined -> (B, n, d)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) override;
  double flops(int64_t n) const override { return cerebra_flops(opts_, n, dense_); }
  bool is_causal() const override { return false; }
  torch::Tensor aux_loss() override;
  torch::Tensor expected_flops() override { return expected_; }
  double realised_flops() const override { return realised_; }
  std::vector<double> realised_flops_per_sequence() const override { return realised_seq_; }
  std::map<std::string, double> stats() const override { return stats_; }
  nlohmann::json own_options() const override { return opts_.describe(); }
  void set_temperature(double tau) override;
  void set_exploration(double scale) override { exploration_ = scale; }
  // The router's noise scale in training (see Router above).
  double noise_scale() const { return router_noise_scale(opts_.gumbel, exploration_); }
  void set_dense(bool dense) override { dense_ = dense; }
  void set_feedforward_flops(double per_token) override { opts_.ffn_token_flops = per_token; }
  bool owns_feedforward() const override { return opts_.owns_feedforward(); }
  torch::Tensor feedforward_tokens() const override { return opts_.owns_feedforward() ? ffn_tokens_ : torch::Tensor(); }
  torch::Tensor feedforward_scale() const override { return opts_.owns_feedforward() ? ffn_scale_ : torch::Tensor(); }

  // One source of truth for `cerebra flops` and reports (see the formulas above).
  static double full_token_flops(const CerebraOptions& o, int64_t n) { return cerebra_cost(o, n).per_full; }
  static double comp_token_flops(const CerebraOptions& o, int64_t n) { return cerebra_cost(o, n).per_comp; }
  static double dense_flops(const CerebraOptions& o, int64_t n) { return dense_attention_flops(n, o.d_model); }

  const CerebraOptions& options() const { return opts_; }
  bool dense() const { return dense_; }
  void set_use_reference(bool r) { opts_.use_reference = r; }
  // Of the last forward: gates (B, n) and the selection (B, n) bool (undefined in dense mode).
  const torch::Tensor& last_gates() const { return routing_.gates; }
  const torch::Tensor& last_selected() const { return routing_.selected; }

  // Structured pruning of the full path's heads (cerebra/pruning.h). A head costs, per sequence, its share of the
  // query projection for every full-path row and of the keys/values and both attention products.
  std::vector<PrunableGroup> prunable_groups(int64_t n) const override;
  torch::Tensor unit_taylor(size_t group) const override;
  void prune_units(size_t group, const std::vector<int64_t>& keep) override;
  void mask_units(size_t group, const std::vector<int64_t>& keep) override;

  // Parameters (names in named_parameters(): router.score, compressor.*, q_proj, kv_proj, out_proj, qc_proj,
  // kvc_proj, kvm_proj, up_proj).
  CerebraRouter router{nullptr};
  CerebraCompressor compressor{nullptr};
  torch::nn::Linear q_proj{nullptr};    // d -> d, routed queries
  torch::nn::Linear kv_proj{nullptr};   // d -> 2d, keys then values of the full path
  torch::nn::Linear out_proj{nullptr};  // d -> d
  torch::nn::Linear qc_proj{nullptr};   // d -> d_c, compressed queries
  torch::nn::Linear kvc_proj{nullptr};  // d -> 2d_c, window keys then values
  torch::nn::Linear kvm_proj{nullptr};  // d_c -> 2d_c, memory keys then values
  torch::nn::Linear up_proj{nullptr};   // d_c -> d, compressed path back to width d

 private:
  // x: (B, n, d), key_mask: (B, n), rows: (B, R) positions or undefined (all) -> (B, R, d)
  torch::Tensor full_path(const torch::Tensor& x, const torch::Tensor& key_mask, const torch::Tensor& rows);
  torch::Tensor full_path_ref(const torch::Tensor& x, const torch::Tensor& key_mask, const torch::Tensor& rows);
  // As full_path for the compressed path, given the memory -> (B, R, d)
  torch::Tensor comp_path(const torch::Tensor& x, const torch::Tensor& key_mask, const torch::Tensor& rows,
                          const CompressedMemory& mem);
  torch::Tensor comp_path_ref(const torch::Tensor& x, const torch::Tensor& key_mask, const torch::Tensor& rows,
                              const CompressedMemory& mem);
  torch::Tensor full_path_packed(const torch::Tensor& x, const torch::Tensor& key_mask, const Routing& r);
  void record(const torch::Tensor& mask, int64_t n, double realised, bool compressor_ran, bool with_reconstruction);

  CerebraOptions opts_;
  bool dense_ = false;
  double exploration_ = 1.0;  // the schedule's exploration (set_exploration), read under gumbel = anneal
  Routing routing_;
  torch::Tensor expected_, rec_loss_;
  torch::Tensor ffn_tokens_, ffn_scale_;  // unrouted = skip: (B, n) the tokens whose feed-forward runs, their factor
  double realised_ = -1.0;
  std::vector<double> realised_seq_;  // per sequence of the last forward; sums to realised_
  std::map<std::string, double> stats_;
  torch::Tensor full_cols_;  // buffer "full_cols" once heads are pruned: columns of d the full path writes
};

}  // namespace cerebra
