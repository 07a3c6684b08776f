// `cerebra flops`: the documents' complexity formulas against the project's analytic FLOPs, with a claims check.
// See include/cerebra/flops_command.h.
#include "cerebra/cli/flops_command.h"
#include "cerebra/cli/command.h"

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cerebra/models/cerebra_layer.h"
#include "cerebra/models/mixer.h"
#include "cerebra/ops/selective_scan.h"

namespace cerebra {

namespace {

using json = nlohmann::json;

constexpr int64_t kCnnDepth = 2;      // gated-conv sub-layers of the "cnn" mixer (its default)
constexpr int64_t kMambaExpand = 2;   // E = expand·d (the "mamba" mixer's default)
constexpr double kSeedMambaC = 50.0;  // seed 000's "realistic implementation constant" c
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct FlopsArgs {
  int64_t n = 10000, d = 512, kernel = 5, topk = 32, window = 32, memory_max = 64;
  double compression_ratio = 0.5, width_scale = 0.5;
  int64_t d_state = 16, heads = 8;
  int64_t features = 64, proj_k = 64, lsh_rounds = 2, lsh_buckets = 8, lsh_chunk = 32;
  bool examples = true;
  std::string json_path;
};

// One shape to evaluate; `case_example` selects seed 000's case-example formulas (attention n², Cerebra n·k).
struct Shape {
  std::string label;
  int64_t n, d, kernel, topk, window, memory_max, d_state, heads;
  double compression_ratio, width_scale;
  bool case_example = false;
  // the surveyed mixers' own options
  int64_t features = 64, proj_k = 64, lsh_rounds = 2, lsh_buckets = 8, lsh_chunk = 32;
};

// The surveyed mixers, listed after the documents' five architectures (their formulas and exponents; memory is
// measured by `cerebra bench layers`).
const std::vector<std::string> kSurveyed = {"longformer", "linformer", "performer", "reformer", "aft_full",
                                            "aft_simple", "aft_local",  "rwkv",      "s4d",      "mamba2"};
bool surveyed(const std::string& id) {
  return std::find(kSurveyed.begin(), kSurveyed.end(), id) != kSurveyed.end();
}

// ---- formatting ------------------------------------------------------------------------------------------------

// 51200000000 -> "51,200,000,000"; very large or non-integral values in scientific notation.
std::string num(double v) {
  if (!std::isfinite(v)) return "-";
  if (std::fabs(v) >= 1e15 || (std::fabs(v) < 1e6 && v != std::round(v))) return fmt::format("{:.4g}", v);
  std::string digits = fmt::format("{}", static_cast<long long>(std::llround(std::fabs(v))));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (v < 0 ? "-" : "") + out;
}
std::string fixed(double v, int prec = 2) { return std::isfinite(v) ? fmt::format("{:.{}f}", v, prec) : "-"; }
std::string ratio_str(double v) {
  if (!std::isfinite(v)) return "-";
  return v >= 100 ? fmt::format("{:.0f}x", v) : fmt::format("{:.2f}x", v);
}
json num_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
double get(const json& j) { return j.is_number() ? j.get<double>() : kNaN; }

// ---- one architecture at one shape ---------------------------------------------------------------------------

MixerOptions mixer_options(const std::string& id, const Shape& s, int64_t d) {
  MixerOptions o;
  o.d_model = d;
  o.n_heads = s.heads;
  o.causal = false;
  auto str = [](double v) { return fmt::format("{}", v); };
  if (id == "transformer") return with_own_options("attention", o, {{"attention_impl", "naive"}});
  if (id == "cnn")
    return with_own_options("cnn", o, {{"kernel_size", str(double(s.kernel))}, {"cnn_depth", str(double(kCnnDepth))}});
  if (id == "mamba")
    return with_own_options("mamba", o, {{"d_state", str(double(s.d_state))}, {"expand", str(double(kMambaExpand))}});
  if (id.rfind("cerebra", 0) == 0)
    return with_own_options("cerebra", o,
                            {{"router_mode", "topk"}, {"compressor", "conv"}, {"topk", str(double(s.topk))},
                             {"window", str(double(s.window))}, {"memory_max", str(double(s.memory_max))},
                             {"compression_ratio", str(s.compression_ratio)}, {"width_scale", str(s.width_scale)}});
  if (id == "longformer")
    return with_own_options("longformer", o, {{"window", str(double(s.window))}, {"global_tokens", "1"}});
  if (id == "linformer") return with_own_options("linformer", o, {{"proj_k", str(double(s.proj_k))}});
  if (id == "performer") return with_own_options("performer", o, {{"n_features", str(double(s.features))}});
  if (id == "reformer")
    return with_own_options("reformer", o,
                            {{"lsh_rounds", str(double(s.lsh_rounds))}, {"lsh_buckets", str(double(s.lsh_buckets))},
                             {"lsh_chunk", str(double(s.lsh_chunk))}});
  if (id.rfind("aft_", 0) == 0)
    return with_own_options("aft", o, {{"aft_variant", id.substr(4)}, {"window", str(double(s.window))}});
  if (id == "s4d") return with_own_options("s4d", o, {{"d_state", str(double(s.d_state))}});
  if (id == "mamba2")
    return with_own_options("mamba2", o, {{"d_state", str(double(s.d_state))}, {"expand", str(double(kMambaExpand))}});
  return o;
}

std::string mixer_name(const std::string& id) {
  if (id == "transformer") return "attention";
  if (id.rfind("cerebra", 0) == 0) return "cerebra";
  if (id.rfind("aft_", 0) == 0) return "aft";
  return id;
}

std::string title(const std::string& id, const Shape& s) {
  if (id == "transformer") return "Transformer attention";
  if (id == "lstm") return "LSTM (RNN)";
  if (id == "cnn") return fmt::format("CNN (gated, k={})", s.kernel);
  if (id == "mamba") return "Mamba";
  if (id == "longformer") return fmt::format("Longformer (w={}, g=1)", s.window);
  if (id == "linformer") return fmt::format("Linformer (k={})", s.proj_k);
  if (id == "performer") return fmt::format("Performer (m={})", s.features);
  if (id == "reformer") return fmt::format("Reformer (R={}, b={}, c={})", s.lsh_rounds, s.lsh_buckets, s.lsh_chunk);
  if (id == "aft_full") return "AFT-full";
  if (id == "aft_simple") return "AFT-simple";
  if (id == "aft_local") return fmt::format("AFT-local (s={})", s.window);
  if (id == "rwkv") return "RWKV-4 time mix";
  if (id == "s4d") return fmt::format("S4D (N={})", s.d_state);
  if (id == "mamba2") return fmt::format("Mamba-2 (N={})", s.d_state);
  return s.memory_max > 0 ? fmt::format("Cerebra (memory_max={})", s.memory_max) : "Cerebra (memory unbounded)";
}

// The documents' formula for this architecture and the number it gives (seed 000; its case example for n=1000).
struct SeedFormula {
  std::string text;
  double value;
};
SeedFormula seed_formula(const std::string& id, const Shape& s) {
  const double n = double(s.n), d = double(s.d), k = double(s.kernel);
  if (id == "transformer") return s.case_example ? SeedFormula{"n^2", n * n} : SeedFormula{"n^2*d", n * n * d};
  if (id == "lstm") return {"n*d^2", n * d * d};
  if (id == "cnn") return {"n*k*d", n * k * d};
  // The document rounds log2(n) to one decimal (log2(10,000) ~ 13.3); so does this.
  if (id == "mamba") return {"n*d*log2(n)*c, c=50", n * d * (std::round(std::log2(n) * 10.0) / 10.0) * kSeedMambaC};
  // Seed 003's complexity table (orders, no constants).
  if (id == "reformer") return {"n*log2(n)*d", n * std::log2(n) * d};
  if (id == "performer") return {"n*d^2*log2(d)", n * d * d * std::log2(d)};
  if (id.rfind("aft_", 0) == 0) return {"n^2*d", n * n * d};
  if (id == "rwkv") return {"n*d", n * d};
  if (surveyed(id)) return {"-", kNaN};
  return s.case_example ? SeedFormula{"n*k, k=topk", n * double(s.topk)} : SeedFormula{"n*d", n * d};
}

std::string project_formula(const std::string& id) {
  if (id == "transformer") return "8*n*d^2 + 4*n^2*d (q,k,v,o projections; QK^T and PV)";
  if (id == "lstm") return "16*n*d^2 (4 gates x input and recurrent projections)";
  if (id == "cnn") return "depth*4*n*d^2*k (conv d -> 2d, GLU), depth=2";
  if (id == "longformer")
    return "8*n*d^2 + ~4*n*(w+1)*d (banded kernel tiles, corners included) + 8*n*g*d (global rows and columns)";
  if (id == "linformer") return "8*n*d^2 + 8*n*k*d (E K, F V; scores and values against k rows)";
  if (id == "performer") return "8*n*d^2 + 4*n*m*d (features of q, k) + 4*n*m*(d+h) (key-value state, read-out)";
  if (id == "reformer")
    return "6*n*d^2 + n*d*R*b (hashing) + 8*R*n_c*c*d (chunk against itself and the previous), n_c = ceil(n/c)*c";
  if (id == "aft_full") return "8*n*d^2 + 4*n^2*d (exp(w) times exp(K)V and exp(K))";
  if (id == "aft_simple") return "8*n*d^2 (the weighted average is element-wise)";
  if (id == "aft_local") return "8*n*d^2 + 4*n*d*(2s-1) (depthwise window correction)";
  if (id == "rwkv") return "8*n*d*C + 12*n*C (key, value, receptance, output; WKV recurrence), C = d";
  if (id == "s4d") return "4*n*d^2 (output GLU) + d*(10*n*log2(2n) + 8*(n+1)) (FFT convolution)";
  if (id == "mamba2")
    return "2*n*d*(2E+2N+H) + 2*n*(E+2N)*k + SSD(chunks of Q=64: 2*(Q*N + H*Q*P + H*P*N) per step) + 2*n*E*d";
  if (id == "mamba")
    return "4*n*d*E + 2*n*E*d_conv + 2*n*E*(R+2N) + 2*n*R*E + 8*n*E*N + 2*n*E*d, E=2d, R=ceil(d/16), N=d_state";
  return "topk*(2d^2+4nd) + (n-topk)*(4*d*d_c+4*m*d_c) + 2nd + compressor + 4nd^2 + 4nd*d_c + 4m*d_c^2 + "
         "4*n_c*S*d_c + 2nd^2 (cerebra_layer.h)";
}

// Activation-memory estimate of one forward (floats, batch 1): what the layer stores for the backward pass.
struct Memory {
  std::string formula;
  double value;
};
Memory memory_estimate(const std::string& id, const Shape& s, const MixerOptions& mo, int64_t n_) {
  if (surveyed(id)) return {"measured by cerebra bench layers", kNaN};
  const double n = double(n_), d = double(s.d), h = double(s.heads);
  if (id == "transformer")
    return {"2*h*n^2 + 4*n*d (scores and probabilities per head; q, k, v, context)", 2.0 * h * n * n + 4.0 * n * d};
  if (id == "lstm") return {"6*n*d (gate pre-activations n*4d; h and c per step)", 6.0 * n * d};
  if (id == "cnn")
    return {"depth*3*n*d (conv output n*2d and GLU output n*d per sub-layer)", double(kCnnDepth) * 3.0 * n * d};
  if (id == "mamba") {
    const double E = double(kMambaExpand) * d, N = double(s.d_state), R = std::ceil(d / 16.0);
    const double chunks = std::ceil(n / double(ops::kSelectiveScanChunk));
    return {"n*(6E + R + 2N) + E*N*ceil(n/64) (x|z, conv, delta, y, B, C; chunk states)",
            n * (6.0 * E + R + 2.0 * N) + E * N * chunks};
  }
  const CerebraOptions o = CerebraOptions::from_mixer(mo);
  const CerebraCost c = cerebra_cost(o, n_);
  const double k = double(std::min<int64_t>(o.topk, n_)), m = double(c.m), dc = double(c.d_c);
  return {"h*(topk*n + (n-topk)*m + n_c*S) + n*(3d + 3d_c) (routed scores, memory scores, window blocks; k/v)",
          h * (k * n + (n - k) * m + double(c.window_rows) * double(c.window_span)) + n * (3.0 * d + 3.0 * dc)};
}

json evaluate(const std::string& id, const Shape& s) {
  const MixerOptions mo = mixer_options(id, s, s.d);
  auto mixer = make_mixer(mixer_name(id), mo);
  const double f = mixer->flops(s.n), f2 = mixer->flops(2 * s.n);
  double d_exp = kNaN;  // local exponent in d: flops at d against flops at d/2 (same n)
  if (s.d % 2 == 0 && (s.d / 2) % s.heads == 0 && s.d / 2 >= s.heads) {
    auto half = make_mixer(mixer_name(id), mixer_options(id, s, s.d / 2));
    d_exp = std::log2(f / half->flops(s.n));
  }
  const SeedFormula seed = seed_formula(id, s);
  const Memory mem = memory_estimate(id, s, mo, s.n), mem2 = memory_estimate(id, s, mo, 2 * s.n);
  const json extra = mixer->own_options();
  return {{"title", title(id, s)},
          {"mixer", mixer_name(id)},
          {"mixer_options", {{"d_model", mo.d_model}, {"n_heads", mo.n_heads}, {"extra", extra}}},
          {"seed_formula", seed.text},
          {"seed_value", num_or_null(seed.value)},
          {"project_formula", project_formula(id)},
          {"flops", f},
          {"flops_2n", f2},
          {"ratio", num_or_null(f / seed.value)},
          {"n_exponent", std::log2(f2 / f)},
          {"d_exponent", num_or_null(d_exp)},
          {"memory_formula", mem.formula},
          {"memory", mem.value},
          {"memory_2n", mem2.value},
          {"memory_exponent", num_or_null(std::log2(mem2.value / mem.value))}};
}

// ---- one shape -------------------------------------------------------------------------------------------------

// Row order of the tables; the second Cerebra row flips the memory bound of the first.
std::vector<std::string> row_ids(const Shape& s) {
  return {"transformer", "lstm", "cnn", "mamba", "cerebra", s.memory_max > 0 ? "cerebra_unbounded" : "cerebra_bounded"};
}

json shape_json(const Shape& s) {
  return {{"label", s.label},         {"n", s.n},
          {"d", s.d},                 {"kernel", s.kernel},
          {"topk", s.topk},           {"window", s.window},
          {"memory_max", s.memory_max}, {"compression_ratio", s.compression_ratio},
          {"width_scale", s.width_scale}, {"d_state", s.d_state},
          {"heads", s.heads}, {"features", s.features}, {"proj_k", s.proj_k},
          {"lsh_rounds", s.lsh_rounds}, {"lsh_buckets", s.lsh_buckets}, {"lsh_chunk", s.lsh_chunk}};
}

json build_report(const Shape& s) {
  json archs = json::object();
  for (const auto& id : row_ids(s)) {
    Shape si = s;
    if (id == "cerebra_unbounded") si.memory_max = 0;
    if (id == "cerebra_bounded") si.memory_max = 64;
    archs[id] = evaluate(id, si);
  }
  for (const auto& id : kSurveyed) archs[id] = evaluate(id, s);
  return {{"shape", shape_json(s)}, {"architectures", archs}};
}

std::string print_report(const json& r) {
  const json& s = r["shape"];
  std::string out = fmt::format(
      "== {}: n = {}, d = {}  (kernel {}, topk {}, window {}, memory_max {}, compression_ratio {}, width_scale {}, "
      "d_state {}, heads {})\n",
      s["label"].get<std::string>(), num(s["n"].get<double>()), num(s["d"].get<double>()), s["kernel"].get<int64_t>(),
      s["topk"].get<int64_t>(), s["window"].get<int64_t>(), s["memory_max"].get<int64_t>(),
      s["compression_ratio"].get<double>(), s["width_scale"].get<double>(), s["d_state"].get<int64_t>(),
      s["heads"].get<int64_t>());
  out += fmt::format("{:<28} {:<20} {:>20} {:>22} {:>9} {:>6} {:>6}\n", "architecture", "document formula",
                     "document value", "project FLOPs/layer", "proj/doc", "n-exp", "d-exp");
  const std::vector<std::string> order = {"transformer", "lstm", "cnn", "mamba", "cerebra", "cerebra_unbounded",
                                          "cerebra_bounded"};
  const json& archs = r["architectures"];
  for (const auto& id : order) {
    if (!archs.contains(id)) continue;
    const json& a = archs[id];
    out += fmt::format("{:<28} {:<20} {:>20} {:>22} {:>9} {:>6} {:>6}\n", a["title"].get<std::string>(),
                       a["seed_formula"].get<std::string>(), num(get(a["seed_value"])), num(get(a["flops"])),
                       ratio_str(get(a["ratio"])), fixed(get(a["n_exponent"])), fixed(get(a["d_exponent"])));
  }
  out += fmt::format("\n{:<28} {:>20} {:>6}  {}\n", "architecture", "activation floats", "n-exp",
                     "memory formula (one forward, batch 1)");
  for (const auto& id : order) {
    if (!archs.contains(id)) continue;
    const json& a = archs[id];
    out += fmt::format("{:<28} {:>20} {:>6}  {}\n", a["title"].get<std::string>(), num(get(a["memory"])),
                       fixed(get(a["memory_exponent"])), a["memory_formula"].get<std::string>());
  }
  out += "\nproject formulas (2 FLOPs per multiply-add; SequenceMixer::flops(n)):\n";
  for (const auto& id : {"transformer", "lstm", "cnn", "mamba", "cerebra"})
    out += fmt::format("  {:<26} {}\n", archs[id]["title"].get<std::string>(),
                       archs[id]["project_formula"].get<std::string>());
  bool any = false;
  for (const auto& id : kSurveyed) any = any || archs.contains(id);
  if (!any) return out + "\n";
  out += fmt::format("\nsurveyed mixers (same convention; activation memory: cerebra bench layers)\n{:<28} {:>22} "
                     "{:>12} {:>6} {:>6}  {}\n",
                     "architecture", "project FLOPs/layer", "vs attention", "n-exp", "d-exp", "formula");
  const double attn = get(archs["transformer"]["flops"]);
  for (const auto& id : kSurveyed) {
    if (!archs.contains(id)) continue;
    const json& a = archs[id];
    out += fmt::format("{:<28} {:>22} {:>12} {:>6} {:>6}  {}\n", a["title"].get<std::string>(), num(get(a["flops"])),
                       ratio_str(get(a["flops"]) / attn), fixed(get(a["n_exponent"])), fixed(get(a["d_exponent"])),
                       a["project_formula"].get<std::string>());
  }
  return out + "\n";
}

// ---- claims ----------------------------------------------------------------------------------------------------

const std::string kSupported = "SUPPORTED", kNotSupported = "NOT SUPPORTED";

json claim(const std::string& source, const std::string& text, const std::string& verdict, const std::string& reason) {
  return {{"source", source}, {"claim", text}, {"verdict", verdict}, {"reason", reason}};
}

// A quoted count against the project's count of the same layer (ratio = project / quoted).
std::string number_verdict(double ratio) {
  if (ratio >= 0.5 && ratio <= 2.0) return kSupported;
  if (ratio >= 0.1 && ratio <= 10.0) return "SUPPORTED ONLY IF read as an order of magnitude";
  return kNotSupported;
}

// "X times fewer": the project's factor against the claimed one.
std::string speedup_verdict(double claimed, double actual) {
  return actual >= claimed / 2.0 ? kSupported : kNotSupported;
}

bool near(double v, double target, double tol) { return std::isfinite(v) && std::fabs(v - target) <= tol; }

// The document's printed number against its own formula (its arithmetic).
std::string arithmetic(double printed, double formula) {
  return std::fabs(printed - formula) <= 0.01 * std::fabs(formula)
             ? "the document's arithmetic is right"
             : fmt::format("the document's arithmetic is off: its formula gives {}", num(formula));
}

json number_claim(const std::string& source, const std::string& text, double printed, const json& row,
                  const std::string& why) {
  const double ratio = get(row["flops"]) / printed;
  return claim(source, text, number_verdict(ratio),
               fmt::format("project {} FLOPs = {} the quoted count ({}); {}", num(get(row["flops"])),
                           ratio_str(ratio), arithmetic(printed, get(row["seed_value"])), why));
}

json build_claims(const json& user, const json& e1, const json& e2, const json& e3) {
  json claims = json::array();
  const json& U = user["architectures"];
  const json& A = e1["architectures"];  // n=10,000 d=512 (CNN k=9)
  const json& B = e2["architectures"];  // n=1024 d=512 k=5
  const json& C = e3["architectures"];  // n=1000 d=64 k=50
  const std::string at = fmt::format("at n={}, d={}", num(user["shape"]["n"].get<double>()),
                                     num(user["shape"]["d"].get<double>()));
  const double un = user["shape"]["n"].get<double>(), ud = user["shape"]["d"].get<double>();
  auto ex = [](const json& a, const char* key) { return get(a[key]); };

  // Transformer
  {
    const double e = ex(U["transformer"], "n_exponent");
    const std::string v = e >= 1.8 ? kSupported : e > 1.2 ? "SUPPORTED ONLY IF n >> d" : kNotSupported;
    claims.push_back(claim("000, 003", "Transformer self-attention time is O(n^2*d), quadratic in n", v,
                           fmt::format("n-exponent {} {} (8*n*d^2 projections + 4*n^2*d products; quadratic term "
                                       "dominates once n > 2d)",
                                       fixed(e), at)));
  }
  claims.push_back(number_claim("000", "n=10,000, d=512: n^2*d = 51,200,000,000 operations per forward pass",
                                51200000000.0, A["transformer"],
                                "the layer runs two n x n x d products (QK^T, PV) at 2 FLOPs per multiply-add plus "
                                "8*n*d^2 of projections; the document counts one product's multiply-adds"));
  // RNN
  {
    const double en = ex(U["lstm"], "n_exponent"), ed = ex(U["lstm"], "d_exponent");
    const double c = get(U["lstm"]["flops"]) / (un * ud * ud);
    const bool ok = near(en, 1.0, 0.1) && near(ed, 2.0, 0.15);
    claims.push_back(claim("000", "RNN cost is n*d^2", ok ? kSupported : kNotSupported,
                           fmt::format("LSTM n-exponent {}, d-exponent {} {}; constant flops/(n*d^2) = {} (4 gates x "
                                       "input and recurrent projections x 2 FLOPs per multiply-add)",
                                       fixed(en), fixed(ed), at, fixed(c, 1))));
  }
  claims.push_back(number_claim("000", "n=10,000, d=512: n*d^2 = 2,621,440,000 operations", 2621440000.0, A["lstm"],
                                "LSTM = 16*n*d^2"));
  {
    const double l = get(A["lstm"]["flops"]), t = get(A["transformer"]["flops"]);
    claims.push_back(claim("000", "n=10,000, d=512: the RNN costs less than the Transformer",
                           l < t ? kSupported : kNotSupported,
                           fmt::format("LSTM {} vs attention {} FLOPs ({} fewer); the sequential dependence is not a "
                                       "FLOP count and is not checked",
                                       num(l), num(t), ratio_str(t / l))));
  }
  // Mamba
  {
    const double e = ex(U["mamba"], "n_exponent");
    const double e_nlogn = 1.0 + std::log2(std::log(2.0 * un) / std::log(un));
    const bool linear = std::fabs(e - 1.0) < std::fabs(e - e_nlogn);
    claims.push_back(claim(
        "000", "Mamba cost is n*d*log(n)*c", linear ? kNotSupported : kSupported,
        fmt::format("measured n-exponent {} {} matches linear (1.000) rather than n*log n ({}): the selective scan is a "
                    "linear recurrence, 8*n*E*N FLOPs; the cost is dominated by the d -> 2E and E -> d projections "
                    "(d-exponent {})",
                    fixed(e, 3), at, fixed(e_nlogn, 3), fixed(ex(U["mamba"], "d_exponent")))));
  }
  claims.push_back(number_claim("000", "n=10,000, d=512, c=50: n*d*log2(n)*c = 3,404,800,000 operations",
                                3404800000.0, A["mamba"], "linear scan plus projections (12*n*d^2 at expand 2)"));
  {
    const double m = get(A["mamba"]["flops"]), t = get(A["transformer"]["flops"]);
    claims.push_back(claim("000", "n=10,000, d=512: Mamba costs less than the Transformer for long sequences",
                           m < t ? kSupported : kNotSupported,
                           fmt::format("Mamba {} vs attention {} FLOPs ({} fewer)", num(m), num(t), ratio_str(t / m))));
  }
  // CNN
  {
    const double en = ex(U["cnn"], "n_exponent"), ed = ex(U["cnn"], "d_exponent");
    const double c = get(U["cnn"]["flops"]) / (un * ud * user["shape"]["kernel"].get<double>());
    const std::string v = !near(en, 1.0, 0.1) ? kNotSupported
                          : near(ed, 1.0, 0.15) ? kSupported
                                                : "SUPPORTED ONLY IF d is fixed";
    claims.push_back(claim("000", "CNN cost is n*k*d", v,
                           fmt::format("n-exponent {}, d-exponent {} {}: a dense convolution of d channels costs "
                                       "n*k*d^2 multiply-adds; flops/(n*k*d) = {} (= 8*d at depth 2)",
                                       fixed(en), fixed(ed), at, num(c))));
  }
  claims.push_back(number_claim("000", "n=10,000, k=9, d=512: n*k*d = 46,080,000 operations", 46080000.0, A["cnn"],
                                "gated conv d -> 2d, two sub-layers"));
  // Cerebra: compute
  const json& bounded = U.contains("cerebra_unbounded") ? U["cerebra"] : U["cerebra_bounded"];
  const json& unbounded = U.contains("cerebra_unbounded") ? U["cerebra_unbounded"] : U["cerebra"];
  {
    const double eb = ex(bounded, "n_exponent"), eu = ex(unbounded, "n_exponent");
    const std::string v = !near(eb, 1.0, 0.1) ? kNotSupported
                          : eu > 1.5 ? "SUPPORTED ONLY IF topk, window and memory_max are fixed"
                                     : kSupported;
    claims.push_back(claim("000", "Cerebra's core compute is O(n*d): linear in n", v,
                           fmt::format("n-exponent {} with {} ({}); {} with memory unbounded (memory_max <= 0: m = "
                                       "r*n slots, each compressed query attends to all of them)",
                                       fixed(eb, 3), bounded["title"].get<std::string>(), at, fixed(eu, 3))));
  }
  {
    const double ed = ex(bounded, "d_exponent");
    claims.push_back(claim("000", "Cerebra's core compute is O(n*d): linear in d, no d^2 term",
                           near(ed, 1.0, 0.15) ? kSupported : kNotSupported,
                           fmt::format("d-exponent {} {}: the q/k/v/output projections cost O(n*d^2); flops/(n*d) = {}",
                                       fixed(ed), at, num(get(bounded["flops"]) / (un * ud)))));
  }
  claims.push_back(number_claim("000", "n=1024, d=512: Cerebra n*d = 524,288 operations", 524288.0, B["cerebra"],
                                "the layer's projections alone are 2*n*d^2 per d x d matrix"));
  claims.push_back(number_claim("000", "n=1024, d=512: Transformer n^2*d = 536,870,912 operations", 536870912.0,
                                B["transformer"], "two products at 2 FLOPs per multiply-add plus 8*n*d^2"));
  {
    const double claimed = 1000.0, doc = get(B["transformer"]["seed_value"]) / get(B["cerebra"]["seed_value"]);
    const double actual = get(B["transformer"]["flops"]) / get(B["cerebra"]["flops"]);
    claims.push_back(claim("000", "n=1024, d=512: Cerebra uses ~1000x fewer operations than Transformers",
                           speedup_verdict(claimed, actual),
                           fmt::format("project: attention {} / Cerebra {} = {} (the document's formulas give {} = n); "
                                       "both layers pay O(n*d^2) projections the formulas leave out",
                                       num(get(B["transformer"]["flops"])), num(get(B["cerebra"]["flops"])),
                                       ratio_str(actual), ratio_str(doc))));
  }
  {
    const double actual = get(B["cnn"]["flops"]) / get(B["cerebra"]["flops"]);
    claims.push_back(claim("000", "n=1024, d=512, k=5: Cerebra uses ~5x fewer operations than CNNs",
                           speedup_verdict(5.0, actual),
                           fmt::format("project: gated CNN {} / Cerebra {} = {} (the document's n*k*d / n*d = k = 5 "
                                       "leaves out d from both)",
                                       num(get(B["cnn"]["flops"])), num(get(B["cerebra"]["flops"])),
                                       ratio_str(actual))));
  }
  // Memory
  {
    const double e = ex(U["transformer"], "memory_exponent");
    claims.push_back(claim("000, 003", "Attention memory is O(n^2) (003: O(n^2 + n*d))",
                           e >= 1.8 ? "SUPPORTED ONLY IF the scores are materialised (attention_impl=naive)"
                                    : kNotSupported,
                           fmt::format("memory n-exponent {} {} for 2*h*n^2 + 4*n*d; the tiled kernel "
                                       "(attention_impl=tiled, online softmax) keeps O(n) extra memory",
                                       fixed(e), at)));
  }
  {
    const double eb = ex(bounded, "memory_exponent"), eu = ex(unbounded, "memory_exponent");
    const std::string v = !near(eb, 1.0, 0.1) ? kNotSupported
                          : eu > 1.5 ? "SUPPORTED ONLY IF memory_max is fixed"
                                     : kSupported;
    claims.push_back(claim("000", "Cerebra memory is O(n): doubling n doubles memory", v,
                           fmt::format("memory n-exponent {} bounded, {} unbounded {} (per head: topk*n routed scores, "
                                       "(n-topk)*m memory scores, window blocks)",
                                       fixed(eb), fixed(eu), at)));
  }
  // Case example (seed 000): n=1000, d=64, k=50.
  claims.push_back(number_claim("000 case example", "n=1000, d=64: attention needs ~n^2 = 1,000,000 operations",
                                1e6, C["transformer"], "4*n^2*d + 8*n*d^2: the n^2 pairs each cost a d-wide dot "
                                                       "product, twice"));
  claims.push_back(number_claim("000 case example", "n=1000, d=64, k=50: Cerebra needs ~n*k = 50,000 operations",
                                5e4, C["cerebra"], "Cerebra with topk=50 routed tokens, every other token on the "
                                                   "compressed path"));
  {
    const double actual = get(C["transformer"]["flops"]) / get(C["cerebra"]["flops"]);
    claims.push_back(claim("000 case example", "n=1000, d=64, k=50: Cerebra reduces compute by 20x",
                           speedup_verdict(20.0, actual),
                           fmt::format("project: attention {} / Cerebra {} = {}", num(get(C["transformer"]["flops"])),
                                       num(get(C["cerebra"]["flops"])), ratio_str(actual))));
    const double mem = get(C["transformer"]["memory"]) / get(C["cerebra"]["memory"]);
    claims.push_back(claim("000 case example", "n=1000, d=64, k=50: Cerebra reduces memory by 20x",
                           speedup_verdict(20.0, mem),
                           fmt::format("activation estimate: attention {} / Cerebra {} floats = {}",
                                       num(get(C["transformer"]["memory"])), num(get(C["cerebra"]["memory"])),
                                       ratio_str(mem))));
  }
  // Survey (seed 003) table.
  {
    const double en = ex(U["mamba"], "n_exponent"), ed = ex(U["mamba"], "d_exponent");
    const std::string v = !near(en, 1.0, 0.1) ? kNotSupported
                          : near(ed, 1.0, 0.15) ? kSupported
                                                : "SUPPORTED ONLY IF d is fixed";
    claims.push_back(claim("003", "Mamba time is O(n*d)", v,
                           fmt::format("n-exponent {}, d-exponent {} {}: linear in n, but the projections (E = 2d) "
                                       "make it O(n*d^2) in width",
                                       fixed(en, 3), fixed(ed), at)));
  }
  {
    const double e = ex(U["mamba"], "memory_exponent");
    const double state = double(kMambaExpand) * ud * user["shape"]["d_state"].get<double>();
    claims.push_back(claim("003", "Mamba space is O(d)",
                           e < 0.1 ? kSupported : "SUPPORTED ONLY IF run recurrently (inference)",
                           fmt::format("the recurrent state is E*N = {} floats, independent of n; a parallel (training) "
                                       "forward stores activations with memory n-exponent {} {}",
                                       num(state), fixed(e), at)));
  }
  // Survey (seed 003) table: the efficient-attention and recurrent competitors.
  {
    const double e = ex(U["reformer"], "n_exponent");
    claims.push_back(claim(
        "003", "Reformer time is O(n*log(n)*d)",
        near(e, 1.0, 0.1) ? "SUPPORTED ONLY IF the sort is counted: its arithmetic is linear in n" : kNotSupported,
        fmt::format("n-exponent {} {} at fixed rounds, buckets and chunk: hashing n*d*R*b and chunked attention "
                    "8*R*n*c*d are linear in n; the n*log(n) is the sort by bucket (comparisons, not FLOPs)",
                    fixed(e, 3), at)));
  }
  {
    const double en = ex(U["performer"], "n_exponent"), ed = ex(U["performer"], "d_exponent");
    const double m = user["shape"]["features"].get<double>();
    claims.push_back(claim(
        "003", "Performer time is O(n*d^2*log(d))",
        near(en, 1.0, 0.1) ? "SUPPORTED ONLY IF m grows as d*log(d) random features (the theory's choice)"
                           : kNotSupported,
        fmt::format("n-exponent {}, d-exponent {} {} at m = {} features: 8*n*d^2 projections + 4*n*m*d features + "
                    "4*n*m*(d+h) state; with m = d*log(d) the feature term is the n*d^2*log(d) of the table",
                    fixed(en, 3), fixed(ed), at, num(m))));
  }
  {
    const double ef = ex(U["aft_full"], "n_exponent"), es = ex(U["aft_simple"], "n_exponent"),
                 el = ex(U["aft_local"], "n_exponent");
    claims.push_back(claim("003", "AFT time is O(n^2*d)", ef > 1.5 ? "SUPPORTED ONLY IF AFT-full" : kNotSupported,
                           fmt::format("n-exponent {} AFT-full (4*n^2*d pairwise products), {} AFT-simple, {} "
                                       "AFT-local {}: the simple and local variants are linear in n",
                                       fixed(ef, 3), fixed(es, 3), fixed(el, 3), at)));
  }
  {
    const double en = ex(U["rwkv"], "n_exponent"), ed = ex(U["rwkv"], "d_exponent");
    const std::string v = !near(en, 1.0, 0.1) ? kNotSupported
                          : near(ed, 1.0, 0.15) ? kSupported
                                                : "SUPPORTED ONLY IF d is fixed";
    claims.push_back(claim("003", "RWKV time is O(n*d)", v,
                           fmt::format("n-exponent {}, d-exponent {} {}: the WKV recurrence is 12*n*C, the key, "
                                       "value, receptance and output projections 8*n*d*C are O(n*d^2)",
                                       fixed(en, 3), fixed(ed), at)));
    claims.push_back(claim("003", "RWKV space is O(d)", "SUPPORTED ONLY IF run recurrently (inference)",
                           fmt::format("the recurrent state is 3*C = {} floats (numerator, denominator, running "
                                       "maximum) whatever n; a parallel (training) forward stores O(n*d) "
                                       "activations (measured by cerebra bench layers)",
                                       num(3.0 * ud))));
  }
  return claims;
}

std::string print_claims(const json& claims) {
  std::string out = "== claims check (project counts: SequenceMixer::flops, 2 FLOPs per multiply-add)\n";
  for (const auto& c : claims)
    out += fmt::format("[{}] ({}) {}\n    {}\n", c["verdict"].get<std::string>(), c["source"].get<std::string>(),
                       c["claim"].get<std::string>(), c["reason"].get<std::string>());
  return out;
}

int run_flops(const FlopsArgs& a) {
  try {
    if (a.n < 1 || a.d < 1 || a.heads < 1) throw std::invalid_argument("--n, --d and --heads must be positive");
    Shape user{"requested shape", a.n,         a.d,         a.kernel,
               a.topk,            a.window,    a.memory_max, a.d_state,
               a.heads,           a.compression_ratio, a.width_scale};
    user.features = a.features, user.proj_k = a.proj_k, user.lsh_rounds = a.lsh_rounds;
    user.lsh_buckets = a.lsh_buckets, user.lsh_chunk = a.lsh_chunk;
    // The documents' worked examples; options not fixed by an example come from the command line.
    Shape e1 = user, e2 = user, e3 = user;
    e1.label = "seed 000 examples (n=10,000, d=512; CNN k=9)";
    e1.n = 10000, e1.d = 512, e1.kernel = 9;
    e2.label = "seed 000 numeric example (n=1024, d=512, k=5)";
    e2.n = 1024, e2.d = 512, e2.kernel = 5;
    e3.label = "seed 000 case example (n=1000, d=64, k=50 routed tokens)";
    e3.n = 1000, e3.d = 64, e3.topk = 50, e3.case_example = true;

    const json ru = build_report(user), r1 = build_report(e1), r2 = build_report(e2), r3 = build_report(e3);
    const json claims = build_claims(ru, r1, r2, r3);

    std::string text = print_report(ru);
    if (a.examples) text += print_report(r1) + print_report(r2) + print_report(r3);
    text += print_claims(claims);
    std::cout << text << std::flush;

    if (!a.json_path.empty()) {
      json out = ru;
      out["convention"] = "forward FLOPs of one layer for one sequence, 2 per multiply-add of matmul-class ops "
                          "(SequenceMixer::flops); memory in floats of stored activations, batch 1";
      out["examples"] = a.examples ? json::array({r1, r2, r3}) : json::array();
      out["claims"] = claims;
      std::ofstream f(a.json_path);
      if (!f) throw std::runtime_error("cannot write " + a.json_path);
      f << out.dump(2) << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: flops: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace

CLI::App* add_flops_command(CLI::App* app, Commands& commands) {
  auto args = std::make_shared<FlopsArgs>();
  auto* sub = app->add_subcommand(
      "flops", "Analytic FLOPs and activation memory of one layer per architecture against the design documents' "
               "complexity formulas, with a claims check");
  sub->add_option("--n", args->n, "Sequence length")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--d", args->d, "Model width d")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--kernel", args->kernel, "CNN kernel size k")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--topk", args->topk, "Cerebra: tokens per sequence routed to the full path")->capture_default_str();
  sub->add_option("--window", args->window, "Cerebra: local window w")->capture_default_str();
  sub->add_option("--memory-max", args->memory_max, "Cerebra: bound on memory slots (<= 0: unbounded, quadratic)")
      ->capture_default_str();
  sub->add_option("--compression-ratio", args->compression_ratio, "Cerebra: memory slots per token r")
      ->capture_default_str();
  sub->add_option("--width-scale", args->width_scale, "Cerebra: compressed width d_c / d")->capture_default_str();
  sub->add_option("--d-state", args->d_state, "Mamba: state size N")->capture_default_str();
  sub->add_option("--heads", args->heads, "Attention heads (attention, Cerebra and the surveyed attention mixers)")
      ->capture_default_str();
  sub->add_option("--features", args->features, "Performer: random features m")->capture_default_str();
  sub->add_option("--proj-k", args->proj_k, "Linformer: projected length k")->capture_default_str();
  sub->add_option("--lsh-rounds", args->lsh_rounds, "Reformer: hash rounds R")->capture_default_str();
  sub->add_option("--lsh-buckets", args->lsh_buckets, "Reformer: buckets per round b")->capture_default_str();
  sub->add_option("--lsh-chunk", args->lsh_chunk, "Reformer: chunk length c")->capture_default_str();
  sub->add_flag("--examples,!--no-examples", args->examples,
                "Also print the documents' worked examples (n=10,000 d=512; n=1024 d=512 k=5; n=1000 d=64 k=50)")
      ->capture_default_str();
  sub->add_option("--json", args->json_path, "Write the report as JSON to this file");
  commands.add(sub, [args]() { return run_flops(*args); });
  return sub;
}

}  // namespace cerebra
