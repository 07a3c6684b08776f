// Cerebra options (parsing, validation, derived sizes) and the analytic FLOP model of the layer.
// The formulas are documented in include/cerebra/cerebra_layer.h; the tests hold them to cerebra::FlopCounter.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "cerebra/models/cerebra_layer.h"

namespace cerebra {

namespace {

// ⌈v⌉ for a product of a real factor and an integer, tolerant of the rounding in e.g. 0.3·10.
int64_t ceil_of(double v) { return static_cast<int64_t>(std::ceil(v - 1e-9)); }

}  // namespace

// ---- names -----------------------------------------------------------------------------------------------------

RoutingMode parse_routing_mode(const std::string& name) {
  if (name == "soft") return RoutingMode::kSoft;
  if (name == "topk") return RoutingMode::kTopK;
  if (name == "threshold") return RoutingMode::kThreshold;
  if (name == "adaptive") return RoutingMode::kAdaptive;
  TORCH_CHECK(false, "cerebra: routing mode must be soft, topk, threshold or adaptive, got '", name, "'");
}

CompressorKind parse_compressor_kind(const std::string& name) {
  if (name == "conv") return CompressorKind::kConv;
  if (name == "attnpool") return CompressorKind::kAttnPool;
  if (name == "hybrid") return CompressorKind::kHybrid;
  TORCH_CHECK(false, "cerebra: compressor must be conv, attnpool or hybrid, got '", name, "'");
}

RouterNoise parse_router_noise(const std::string& name) {
  if (name == "false") return RouterNoise::kOff;
  if (name == "true") return RouterNoise::kOn;
  if (name == "anneal") return RouterNoise::kAnneal;
  TORCH_CHECK(false, "cerebra: gumbel must be true, false or anneal, got '", name, "'");
}

std::string to_string(RouterNoise noise) {
  switch (noise) {
    case RouterNoise::kOff: return "false";
    case RouterNoise::kOn: return "true";
    case RouterNoise::kAnneal: return "anneal";
  }
  return "?";
}

std::string to_string(RoutingMode mode) {
  switch (mode) {
    case RoutingMode::kSoft: return "soft";
    case RoutingMode::kTopK: return "topk";
    case RoutingMode::kThreshold: return "threshold";
    case RoutingMode::kAdaptive: return "adaptive";
  }
  return "?";
}

std::string to_string(CompressorKind kind) {
  switch (kind) {
    case CompressorKind::kConv: return "conv";
    case CompressorKind::kAttnPool: return "attnpool";
    case CompressorKind::kHybrid: return "hybrid";
  }
  return "?";
}

// ---- options ---------------------------------------------------------------------------------------------------

CerebraOptions CerebraOptions::from_mixer(const MixerOptions& m) {
  CerebraOptions o = m.own_as<CerebraOptions>();
  o.d_model = m.d_model;
  o.n_heads = m.n_heads;
  o.causal = m.causal;
  o.validate();
  return o;
}

CerebraOptions CerebraOptions::from_config(const Config& c) {
  CerebraOptions o;
  o.mode = parse_routing_mode(c.get_string("router_mode"));
  o.topk = c.get_int("topk");
  o.k_max = c.get_int("k_max");
  o.k_min = c.get_int("k_min");
  o.tau = c.get_float("tau");
  o.gumbel = parse_router_noise(c.get_string("gumbel"));
  o.compressor = parse_compressor_kind(c.get_string("compressor"));
  o.compression_ratio = c.get_float("compression_ratio");
  o.width_scale = c.get_float("width_scale");
  o.memory_max = c.get_int("memory_max");
  o.window = c.get_int("window");
  o.rec_weight = c.get_float("rec_weight");
  o.use_reference = c.get_bool("cerebra_reference");
  o.conv_kernel = c.get_int("conv_kernel");
  o.pool_queries = c.get_int("pool_queries");
  o.full_heads = c.get_int("full_heads");
  o.memory_block = c.get_int("memory_block");
  o.eval_topk = c.get_string("eval_routing") == "topk";
  // auto: adaptive routing (the compute the gates decide) skips unrouted tokens; the fixed-count modes keep the
  // paper's compressed path.
  const std::string unrouted = c.get_string("unrouted");
  const bool skip = unrouted == "skip" || (unrouted == "auto" && o.mode == RoutingMode::kAdaptive);
  o.unrouted = skip ? Unrouted::kSkip : Unrouted::kCompressed;
  return o;
}

nlohmann::json CerebraOptions::describe() const {
  return {{"router_mode", to_string(mode)}, {"topk", topk}, {"k_max", k_max}, {"k_min", k_min}, {"gumbel", to_string(gumbel)},
          {"compressor", to_string(compressor)}, {"compression_ratio", compression_ratio},
          {"width_scale", width_scale}, {"memory_max", memory_max}, {"window", window}, {"rec_weight", rec_weight},
          {"cerebra_reference", use_reference}, {"conv_kernel", conv_kernel}, {"pool_queries", pool_queries},
          {"full_heads", full_heads}, {"unrouted", unrouted == Unrouted::kSkip ? "skip" : "compressed"},
          {"memory_block", memory_block}, {"eval_routing", eval_topk ? "topk" : "predictor"}};
}

std::vector<KeySpec> CerebraOptions::keys() {
  using VT = ValueType;
  return {
      {"router_mode", VT::String, "topk", "cerebra: which tokens take the full path: soft (both paths, mixed by the "
       "gate), topk (k per sequence), threshold (gate >= 0.5, at most k_max), adaptive (gate >= 0.5, as many as the "
       "gates decide; the routed tokens of the whole batch run packed, without padding)",
       {"soft", "topk", "threshold", "adaptive"}, ""},
      {"unrouted", VT::String, "auto", "cerebra: what a token the router does not select gets: the compressed "
       "path, or nothing (skip: Mixture-of-Depths, it skips the block's attention and feed-forward and keeps its "
       "residual; hard router modes); auto = skip with router_mode adaptive, compressed otherwise",
       {"auto", "compressed", "skip"}, ""},
      {"topk", VT::Int, "16", "cerebra: tokens per sequence on the full path in topk mode (0 = compression only; "
       "capped by the sequence length)", {}, ""},
      {"k_max", VT::Int, "64", "cerebra: cap on routed tokens per sequence in threshold mode", {}, ""},
      {"k_min", VT::Int, "0", "cerebra: floor on routed tokens per sequence in threshold and adaptive modes: the "
       "k_min best-scored tokens take the full path whatever their gates, so a router whose gates all fell still "
       "gets a task gradient (0 = none)", {}, ""},
      {"compressor", VT::String, "conv", "cerebra: compressor of the memory slots", {"conv", "attnpool", "hybrid"},
       ""},
      {"compression_ratio", VT::Float, "0.5", "cerebra: memory slots m = ceil(r n), bounded by memory_max", {}, ""},
      {"width_scale", VT::Float, "0.5", "cerebra: compressed width d_c = ceil(s d)", {}, ""},
      {"memory_max", VT::Int, "64", "cerebra: bound on memory slots (<= 0: unbounded, cost quadratic in n)", {}, ""},
      {"window", VT::Int, "8", "cerebra: local window w of the compressed path", {}, ""},
      {"rec_weight", VT::Float, "0", "cerebra: weight alpha of the compressor's reconstruction loss", {}, ""},
      {"gumbel", VT::String, "true", "cerebra: logistic (binary-concrete) noise on the router's scores while "
       "training: true (always), false (never), anneal (full at the router's switch-on, fading to none at the end "
       "of the lambda ramp: exploration while lambda ramps, then the routing that evaluation uses; none without a "
       "ramp)",
       {"true", "false", "anneal"}, ""},
      {"conv_kernel", VT::Int, "3", "cerebra: depthwise kernel of the conv and hybrid compressors (odd)", {}, ""},
      {"pool_queries", VT::Int, "64", "cerebra: learned-query bank of attnpool/hybrid when memory_max <= 0", {}, ""},
      {"full_heads", VT::Int, "0", "cerebra: heads of the full path (0 = n_heads; set by structured pruning)", {},
       ""},
      {"memory_block", VT::Int, "0", "causal cerebra (language models): tokens summarised by one memory slot, a "
       "slot per block of tokens already seen (0 = ceil(1 / compression_ratio))", {}, ""},
      {"eval_routing", VT::String, "predictor", "causal cerebra: the routing rule when evaluating: predictor (from "
       "each token alone, causal; what generation uses) or topk (reads the whole sequence: not causal, for measuring "
       "what the predictor costs)", {"predictor", "topk"}, ""},
      {"cerebra_reference", VT::Bool, "false", "cerebra: run both paths the plain way (every query against all keys, "
       "band-masked window): the same function as the fast paths, for tests", {}, ""},
  };
}

void CerebraOptions::validate() const {
  TORCH_CHECK(d_model > 0 && n_heads > 0 && d_model % n_heads == 0, "cerebra: d_model (", d_model,
              ") must be a positive multiple of n_heads (", n_heads, ")");
  TORCH_CHECK(topk >= 0, "cerebra: topk must be >= 0, got ", topk);
  TORCH_CHECK(k_max >= 0, "cerebra: k_max must be >= 0, got ", k_max);
  TORCH_CHECK(k_min >= 0, "cerebra: k_min must be >= 0, got ", k_min);
  TORCH_CHECK(mode != RoutingMode::kThreshold || k_min <= k_max, "cerebra: k_min (", k_min,
              ") must be <= k_max (", k_max, ") in threshold mode");
  TORCH_CHECK(tau > 0, "cerebra: tau must be > 0, got ", tau);
  TORCH_CHECK(compression_ratio > 0 && compression_ratio <= 1, "cerebra: compression_ratio must be in (0, 1], got ",
              compression_ratio);
  TORCH_CHECK(width_scale > 0 && width_scale <= 1, "cerebra: width_scale must be in (0, 1], got ", width_scale);
  TORCH_CHECK(window >= 0, "cerebra: window must be >= 0, got ", window);
  TORCH_CHECK(rec_weight >= 0, "cerebra: rec_weight must be >= 0, got ", rec_weight);
  TORCH_CHECK(conv_kernel >= 1 && conv_kernel % 2 == 1, "cerebra: conv_kernel must be odd and >= 1, got ",
              conv_kernel);
  TORCH_CHECK(pool_queries >= 1, "cerebra: pool_queries must be >= 1, got ", pool_queries);
  TORCH_CHECK(!(unrouted == Unrouted::kSkip && mode == RoutingMode::kSoft),
              "cerebra: unrouted = skip needs a hard router_mode (topk, threshold or adaptive), not soft");
  TORCH_CHECK(full_heads >= 0 && full_heads <= n_heads, "cerebra: full_heads must be in [0, n_heads], got ", full_heads);
  TORCH_CHECK(memory_block >= 0, "cerebra: memory_block must be >= 0, got ", memory_block);
  if (!causal) return;
  // The causal layer (language models): top-k routing in training, the causal predictor when evaluating and
  // generating; the compressed path over a window of the past and memory slots of finished blocks.
  TORCH_CHECK(mode == RoutingMode::kTopK, "cerebra: the causal layer routes by top-k while training and by its causal "
              "predictor when evaluating and generating; router_mode must be topk, got ", to_string(mode));
  TORCH_CHECK(unrouted == Unrouted::kCompressed, "cerebra: the causal layer sends unrouted tokens to the compressed "
              "path; unrouted = skip is not supported");
  TORCH_CHECK(compressor == CompressorKind::kConv, "cerebra: the causal layer's memory is the causal conv compressor "
              "(mean of a causal depthwise convolution over each finished block); compressor must be conv, got ",
              to_string(compressor));
  TORCH_CHECK(rec_weight == 0, "cerebra: the causal layer has no reconstruction loss; rec_weight must be 0, got ",
              rec_weight);
  TORCH_CHECK(full_heads == 0 || full_heads == n_heads, "cerebra: the causal layer's full-path heads are not pruned");
  TORCH_CHECK(window >= 1, "cerebra: the causal layer's window (the token and the window - 1 before it) must be "
              ">= 1, got ", window);
}

int64_t CerebraOptions::memory_block_size() const {
  return memory_block > 0 ? memory_block : std::max<int64_t>(1, ceil_of(1.0 / compression_ratio));
}

int64_t CerebraOptions::compressed_width() const {
  const int64_t raw = std::max<int64_t>(1, ceil_of(width_scale * static_cast<double>(d_model)));
  return (raw + n_heads - 1) / n_heads * n_heads;
}

int64_t CerebraOptions::memory_slots(int64_t n) const {
  int64_t m = std::max<int64_t>(1, ceil_of(compression_ratio * static_cast<double>(n)));
  if (memory_max > 0) m = std::min(m, memory_max);
  return m;
}

int64_t CerebraOptions::window_keys() const { return 2 * (window / 2) + 1; }

int64_t CerebraOptions::window_block() const { return std::max<int64_t>(16, 2 * (window / 2)); }

int64_t CerebraOptions::pool_bank() const { return memory_max > 0 ? memory_max : pool_queries; }

// ---- FLOPs -----------------------------------------------------------------------------------------------------

double CerebraCost::executed(int64_t full_rows, int64_t comp_rows, bool with_reconstruction) const {
  double f = router + out_proj;
  if (full_rows > 0) f += full_shared + static_cast<double>(full_rows) * per_full;
  if (comp_rows > 0) f += compressor + comp_shared + static_cast<double>(comp_rows) * per_comp;
  if (comp_rows > 0 && with_reconstruction) f += reconstruction;
  return f;
}

CerebraCost cerebra_cost(const CerebraOptions& o, int64_t n) {
  CerebraCost c;
  c.n = n;
  c.m = o.memory_slots(n);
  c.d_c = o.compressed_width();
  c.window_keys = o.window_keys();
  const double N = static_cast<double>(n), d = static_cast<double>(o.d_model), dc = static_cast<double>(c.d_c);
  const double m = static_cast<double>(c.m);
  const int64_t block = o.window_block();
  c.window_span = block + 2 * (o.window / 2);
  c.window_rows = (n + block - 1) / block * block;
  const double span = static_cast<double>(c.window_span), Np = static_cast<double>(c.window_rows);
  const double kappa = static_cast<double>(o.conv_kernel);

  const double df = static_cast<double>(o.full_width());  // = d unless full-path heads are pruned
  c.per_full = 2.0 * d * df + 4.0 * N * df;
  c.per_comp = 4.0 * d * dc + 4.0 * m * dc;
  c.router = 2.0 * N * d;
  const bool conv = o.compressor != CompressorKind::kAttnPool;
  const bool pool = o.compressor != CompressorKind::kConv;
  c.compressor = 2.0 * m * d * dc + (conv ? 2.0 * N * d * kappa : 0.0) + (pool ? 4.0 * m * N * d : 0.0);
  c.full_shared = 4.0 * N * d * df;
  c.comp_shared = 4.0 * N * d * dc + 4.0 * m * dc * dc + 4.0 * Np * span * dc;
  c.out_row = 2.0 * d * d;
  c.mod_row = 6.0 * d * df;
  c.full_width = df;
  c.out_proj = N * c.out_row;
  c.ffn_row = o.owns_feedforward() ? o.ffn_token_flops : 0.0;
  c.reconstruction = 2.0 * m * dc * d + (pool ? 2.0 * N * m * d : 0.0);
  return c;
}

double dense_attention_flops(int64_t n, int64_t d_model) {
  const double N = static_cast<double>(n), d = static_cast<double>(d_model);
  return 8.0 * N * d * d + 4.0 * N * N * d;
}

double cerebra_flops(const CerebraOptions& o, int64_t n, bool dense) {
  const CerebraCost c = cerebra_cost(o, n);
  const double block_ffn = static_cast<double>(n) * c.ffn_row;  // the block's feed-forward, when the layer owns it
  if (dense)
    return (o.full_width() == o.d_model ? dense_attention_flops(n, o.d_model) : c.executed(n, 0)) + block_ffn;
  if (o.unrouted == Unrouted::kSkip) {
    switch (o.mode) {
      case RoutingMode::kTopK: return c.executed_skip(std::min(o.topk, n));
      case RoutingMode::kThreshold: return c.executed_skip(std::min(o.k_max, n));
      default: return c.executed_mod(n);  // adaptive: every token routed, the upper bound
    }
  }
  switch (o.mode) {
    case RoutingMode::kAdaptive: return c.executed(n, n);  // both paths for every row: the upper bound
    case RoutingMode::kSoft: return c.executed(n, n);
    case RoutingMode::kTopK: {
      const int64_t k = std::min(o.topk, n);
      return c.executed(k, n - k);
    }
    case RoutingMode::kThreshold: {
      const int64_t k = std::min(o.k_max, n);
      return c.executed(k, n - k);
    }
  }
  return 0.0;
}

}  // namespace cerebra
