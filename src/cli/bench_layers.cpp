// `cerebra bench layers`: one sequence-mixer layer per implementation and length, forward + backward.
// See include/cerebra/bench_layers.h for the measured quantities.
#include "cerebra/cli/bench_layers.h"
#include "cerebra/cli/command.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cerebra/core/op_profiler.h"
#include "cerebra/models/mixer.h"
#include "cerebra/core/runtime.h"

namespace cerebra {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMiB = 1024.0 * 1024.0;

struct BenchLayersArgs {
  std::vector<int64_t> lengths{256, 1024, 4096, 16384, 65536};
  int64_t d = 256;
  int64_t heads = 4;
  int64_t batch = 1;
  std::string impls = "attention:naive,attention:tiled,mamba,lstm,cnn,cerebra";
  int repeats = 3;
  int threads = 1;
  int64_t topk = 32;
  int64_t window = 32;
  int64_t memory_max = 64;
  double mem_limit_gib = 8.0;
  int64_t max_lstm_n = 16384;
  double max_seconds = 60.0;
  int64_t gemm_n = 1024;
  std::string out = "runs/bench-layers";
  std::vector<std::string> sets;  // key=value: a mixer option for every implementation whose mixer has the key
  int breakdown = 0;              // > 0: after the timed steps, profile as many more and print this many top ops
};

// One implementation to run: a registered mixer name plus, for attention, its attention_impl and, for aft, its
// aft_variant.
struct Impl {
  std::string label;    // as given, e.g. "attention:tiled"
  std::string mixer;    // "attention"
  std::string variant;  // "tiled" (attention), "full" (aft)
};

struct Record {
  std::string impl;
  int64_t n = 0;
  std::string status;  // ok | skipped | error
  std::string reason;
  double ms = 0, tokens_per_s = 0, gflops = 0, pct_peak = 0, peak_mib = 0;
  double forward_flops = 0, est_mem_gib = 0;
  OpBreakdown breakdown;  // --breakdown: per-op wall time per step of the profiled steps
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

Impl parse_impl(const std::string& label) {
  Impl impl{label, label, ""};
  const auto colon = label.find(':');
  if (colon != std::string::npos) {
    impl.mixer = label.substr(0, colon);
    impl.variant = label.substr(colon + 1);
  }
  const auto names = mixer_names();
  if (std::find(names.begin(), names.end(), impl.mixer) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown implementation '" + label + "' (mixers: " + known + ")");
  }
  if (impl.mixer == "attention") {
    if (impl.variant.empty()) impl.variant = "naive";
    if (impl.variant != "naive" && impl.variant != "tiled")
      throw std::invalid_argument("unknown attention variant in '" + label + "'; expected attention:naive|tiled");
  } else if (impl.mixer == "aft") {
    if (impl.variant.empty()) impl.variant = "simple";
    if (impl.variant != "full" && impl.variant != "simple" && impl.variant != "local")
      throw std::invalid_argument("unknown aft variant in '" + label + "'; expected aft:full|simple|local");
  } else if (!impl.variant.empty()) {
    throw std::invalid_argument("'" + label + "': only attention and aft take a variant (attention:naive|tiled, "
                                "aft:full|simple|local)");
  }
  return impl;
}

// --set key=value pairs, split and checked: each key must belong to at least one of the implementations' mixers.
std::map<std::string, std::string> parse_sets(const std::vector<std::string>& sets, const std::vector<Impl>& impls) {
  std::map<std::string, std::string> out;
  for (const auto& kv : sets) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw std::invalid_argument("--set '" + kv + "': expected key=value, e.g. --set linformer_max_len=65536");
    const std::string key = kv.substr(0, eq);
    bool used = false;
    for (const auto& impl : impls)
      for (const auto& k : mixer_def(impl.mixer).keys) used = used || k.name == key;
    if (!used)
      throw std::invalid_argument("--set '" + kv + "': no implementation in --impls has the option '" + key +
                                  "' (see cerebra train --help for each mixer's keys)");
    out[key] = kv.substr(eq + 1);
  }
  return out;
}

MixerOptions mixer_options(const Impl& impl, const BenchLayersArgs& a, const std::map<std::string, std::string>& sets) {
  MixerOptions o;
  o.d_model = a.d;
  o.n_heads = a.heads;
  o.causal = false;
  std::map<std::string, std::string> own;
  if (impl.mixer == "attention") own = {{"attention_impl", impl.variant}};
  if (impl.mixer == "aft") own = {{"aft_variant", impl.variant}};
  if (impl.mixer == "cerebra")
    own = {{"router_mode", "topk"}, {"topk", std::to_string(a.topk)}, {"window", std::to_string(a.window)},
           {"compression_ratio", "0.5"}, {"memory_max", std::to_string(a.memory_max)}};
  for (const auto& k : mixer_def(impl.mixer).keys)
    if (auto it = sets.find(k.name); it != sets.end()) own[k.name] = it->second;
  return with_own_options(impl.mixer, o, own);
}

// Estimated peak bytes of one forward + backward (a deliberate over-estimate; the measured peak is reported).
// Every layer keeps a few dozen (B, n, d) activations for the backward; naive attention adds its (B, h, n, n)
// scores, probabilities and their gradient.
double estimate_bytes(const Impl& impl, int64_t n, const BenchLayersArgs& a) {
  const double B = static_cast<double>(a.batch), N = static_cast<double>(n), d = static_cast<double>(a.d);
  const double act = B * N * d * 4.0;  // one fp32 (B, n, d) tensor
  if (impl.mixer == "attention") {
    const double linear = 16.0 * act;
    if (impl.variant == "naive") return linear + 3.0 * B * static_cast<double>(a.heads) * N * N * 4.0;
    return linear;
  }
  if (impl.mixer == "aft" && impl.variant == "full") return 16.0 * act + 4.0 * N * N * 4.0;  // exp(w), its grads
  if (impl.mixer == "lstm") return 12.0 * act;
  if (impl.mixer == "mamba") return 48.0 * act;  // expand 2 and the scan's states
  if (impl.mixer == "cnn") return 16.0 * act;
  return 32.0 * act;  // cerebra: both paths, window blocks, memory slots
}

// Exponent of n in the step time: quadratic for dense attention, linear for the rest.
double time_exponent(const Impl& impl) { return impl.mixer == "attention" ? 2.0 : 1.0; }

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// One configuration: warm-up, then `repeats` timed steps; the median time and the largest peak above baseline.
void measure(const Impl& impl, int64_t n, const BenchLayersArgs& a, const std::map<std::string, std::string>& sets,
             Record& r) {
  torch::manual_seed(0);
  auto mixer = make_mixer(impl.mixer, mixer_options(impl, a, sets));
  mixer->train();
  r.forward_flops = mixer->flops(n);
  auto x = torch::randn({a.batch, n, a.d}).requires_grad_(true);
  auto gy = torch::randn({a.batch, n, a.d});
  int64_t peak = 0;
  std::vector<double> times;
  for (int i = 0; i <= a.repeats; ++i) {
    mixer->zero_grad();
    x.mutable_grad() = torch::Tensor();
    const int64_t base = current_tensor_bytes();
    reset_peak_tensor_bytes();
    const auto t0 = std::chrono::steady_clock::now();
    {
      auto y = mixer->forward(x, {});
      y.backward(gy);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    peak = std::max(peak, peak_tensor_bytes() - base);
    if (i > 0) times.push_back(s);  // step 0 is the warm-up
  }
  if (a.breakdown > 0)
    r.breakdown = profile_ops(
        [&] {
          mixer->zero_grad();
          x.mutable_grad() = torch::Tensor();
          auto y = mixer->forward(x, {});
          y.backward(gy);
        },
        a.repeats);
  const double t = median(times);
  r.ms = 1e3 * t;
  r.tokens_per_s = static_cast<double>(a.batch * n) / t;
  r.gflops = 3.0 * r.forward_flops * static_cast<double>(a.batch) / t / 1e9;
  r.peak_mib = static_cast<double>(peak) / kMiB;
  r.status = "ok";
}

int run_bench_layers(const BenchLayersArgs& a) {
  std::vector<Impl> impls;
  std::map<std::string, std::string> sets;
  try {
    if (a.d <= 0 || a.heads <= 0 || a.batch <= 0 || a.repeats <= 0)
      throw std::invalid_argument("--d, --heads, --batch and --repeats must be positive");
    if (a.breakdown < 0) throw std::invalid_argument("--breakdown must be >= 0 (0 = off)");
    if (a.d % a.heads != 0) throw std::invalid_argument("--d must be divisible by --heads");
    for (int64_t n : a.lengths)
      if (n <= 0) throw std::invalid_argument("sequence lengths must be positive");
    for (const auto& label : split_list(a.impls)) impls.push_back(parse_impl(label));
    if (impls.empty()) throw std::invalid_argument("--impls is empty");
    sets = parse_sets(a.sets, impls);
    for (const auto& impl : impls) mixer_options(impl, a, sets);  // bad option values fail here, before any work
  } catch (const std::exception& e) {
    std::cerr << "bench layers: " << e.what() << "\n";
    return 2;
  }

  const int previous_threads = at::get_num_threads();
  const int threads = set_threads(a.threads);
  install_counting_allocator();
  const double gemm = measure_gemm_gflops(a.gemm_n, 5);
  const std::string blas = loaded_blas_library(), machine = machine_description();

  std::printf("machine   %s\n", machine.c_str());
  std::printf("threads   %d\n", threads);
  std::printf("blas      %s\n", blas.empty() ? "(none mapped)" : blas.c_str());
  std::printf("gemm peak %.1f GFLOP/s (%lld x %lld fp32 matmul, %d thread%s)\n", gemm,
              static_cast<long long>(a.gemm_n), static_cast<long long>(a.gemm_n), threads, threads == 1 ? "" : "s");
  std::printf("layer     d=%lld heads=%lld batch=%lld, forward+backward, median of %d after 1 warm-up\n",
              static_cast<long long>(a.d), static_cast<long long>(a.heads), static_cast<long long>(a.batch),
              a.repeats);
  std::printf("GFLOP/s = 3 x analytic forward FLOPs (flops(n)) x batch / time; peak MiB = tensor bytes above the "
              "step's baseline\n\n");
  std::printf("%-18s %7s %10s %12s %9s %7s %10s  %s\n", "impl", "n", "ms", "tokens/s", "GFLOP/s", "%peak",
              "peak MiB", "note");
  std::fflush(stdout);

  std::vector<Record> records;
  const size_t total = impls.size() * a.lengths.size();
  size_t index = 0;
  for (const auto& impl : impls) {
    double last_time = -1.0, prev_time = -1.0;  // seconds per step at last_n and prev_n (the last two that ran)
    int64_t last_n = 0, prev_n = 0;
    for (int64_t n : a.lengths) {
      ++index;
      Record r;
      r.impl = impl.label;
      r.n = n;
      r.est_mem_gib = estimate_bytes(impl, n, a) / kGiB;
      std::fprintf(stderr, "[%zu/%zu] %s n=%lld ...\n", index, total, impl.label.c_str(), static_cast<long long>(n));
      if (impl.mixer == "lstm" && n > a.max_lstm_n) {
        r.status = "skipped";
        r.reason = "skipped: lstm is sequential and slow beyond n=" + std::to_string(a.max_lstm_n) +
                   " (raise --max-lstm-n)";
      } else if (r.est_mem_gib > a.mem_limit_gib) {
        r.status = "skipped";
        r.reason = "skipped: would need ~" + fmt("%.2g", r.est_mem_gib) + " GiB (limit --mem-limit-gib " +
                   fmt("%g", a.mem_limit_gib) + ")";
      } else if (last_time > 0) {
        // Scale by the impl's complexity, or by the growth observed between the last two lengths when steeper.
        double p = time_exponent(impl);
        if (prev_time > 0 && last_n > prev_n)
          p = std::max(p, std::log(last_time / prev_time) / std::log(static_cast<double>(last_n) / prev_n));
        const double step = last_time * std::pow(static_cast<double>(n) / last_n, p);
        const double predicted = step * (a.repeats + 1);
        if (predicted > a.max_seconds) {
          r.status = "skipped";
          r.reason = "skipped: predicted ~" + fmt("%.3g", predicted) + " s (limit --max-seconds " +
                     fmt("%g", a.max_seconds) + ")";
        }
      }
      if (r.status.empty()) {
        try {
          measure(impl, n, a, sets, r);
          prev_time = last_time;
          prev_n = last_n;
          last_time = r.ms / 1e3;
          last_n = n;
          r.pct_peak = gemm > 0 ? 100.0 * r.gflops / gemm : 0.0;
        } catch (const std::exception& e) {
          r.status = "error";
          std::string what = e.what();
          what = what.substr(0, what.find('\n'));  // c10 errors append a backtrace
          r.reason = "error: " + what;
        }
      }
      if (r.status == "ok") {
        std::printf("%-18s %7lld %10.2f %12.0f %9.2f %7.1f %10.1f\n", r.impl.c_str(), static_cast<long long>(n),
                    r.ms, r.tokens_per_s, r.gflops, r.pct_peak, r.peak_mib);
        std::fprintf(stderr, "[%zu/%zu] %s n=%lld: %.2f ms, %.2f GFLOP/s, %.1f MiB\n", index, total,
                     impl.label.c_str(), static_cast<long long>(n), r.ms, r.gflops, r.peak_mib);
        if (a.breakdown > 0) std::fputs(format_breakdown(r.breakdown, a.breakdown, "step").c_str(), stdout);
      } else {
        std::printf("%-18s %7lld %10s %12s %9s %7s %10s  %s\n", r.impl.c_str(), static_cast<long long>(n), "-", "-",
                    "-", "-", "-", r.reason.c_str());
        std::fprintf(stderr, "[%zu/%zu] %s n=%lld: %s\n", index, total, impl.label.c_str(),
                     static_cast<long long>(n), r.reason.c_str());
      }
      std::fflush(stdout);
      records.push_back(r);
    }
  }
  set_threads(previous_threads);

  try {
    std::filesystem::create_directories(a.out);
    const auto dir = std::filesystem::path(a.out);
    std::ofstream csv(dir / "results.csv");
    csv << "impl,n,d,heads,batch,threads,status,ms,tokens_per_s,gflops,pct_gemm_peak,peak_mib,forward_flops,"
           "est_mem_gib,reason\n";
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : records) {
      const bool ok = r.status == "ok";
      csv << csv_field(r.impl) << ',' << r.n << ',' << a.d << ',' << a.heads << ',' << a.batch << ',' << threads
          << ',' << r.status << ',' << (ok ? fmt("%.4f", r.ms) : "") << ',' << (ok ? fmt("%.1f", r.tokens_per_s) : "")
          << ',' << (ok ? fmt("%.4f", r.gflops) : "") << ',' << (ok ? fmt("%.2f", r.pct_peak) : "") << ','
          << (ok ? fmt("%.3f", r.peak_mib) : "") << ',' << (r.forward_flops > 0 ? fmt("%.6g", r.forward_flops) : "")
          << ',' << fmt("%.4g", r.est_mem_gib) << ',' << csv_field(r.reason) << '\n';
      nlohmann::json j = {{"impl", r.impl},       {"n", r.n},           {"d", a.d},
                          {"heads", a.heads},     {"batch", a.batch},   {"status", r.status},
                          {"reason", r.reason},   {"est_mem_gib", r.est_mem_gib}};
      if (ok && a.breakdown > 0) j["breakdown"] = breakdown_json(r.breakdown, "step");
      if (ok) {
        j["ms"] = r.ms;
        j["tokens_per_s"] = r.tokens_per_s;
        j["gflops"] = r.gflops;
        j["pct_gemm_peak"] = r.pct_peak;
        j["peak_mib"] = r.peak_mib;
        j["forward_flops"] = r.forward_flops;
      }
      rows.push_back(j);
    }
    nlohmann::json doc = {{"machine", machine},
                          {"threads", threads},
                          {"blas", blas},
                          {"openmp_wait_policy", openmp_wait_policy()},
                          {"gemm_gflops", gemm},
                          {"gemm_n", a.gemm_n},
                          {"torch", torch_version()},
                          {"repeats", a.repeats},
                          {"options", sets},
                          {"gflops_formula", "3 * flops(n) * batch / median forward+backward time"},
                          {"results", rows}};
    std::ofstream(dir / "results.json") << doc.dump(2) << '\n';
    std::printf("\nwrote %s and %s\n", (dir / "results.csv").string().c_str(),
                (dir / "results.json").string().c_str());
  } catch (const std::exception& e) {
    std::cerr << "bench layers: cannot write results to " << a.out << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

CLI::App* add_bench_layers_command(CLI::App* bench, Commands& commands) {
  auto args = std::make_shared<BenchLayersArgs>();
  auto* cmd = bench->add_subcommand(
      "layers",
      "Forward + backward time, GFLOP/s and peak tensor memory of one mixer layer per implementation and length.\n"
      "GFLOP/s = 3 x analytic forward FLOPs (SequenceMixer::flops(n)) x batch / median step time; % peak is\n"
      "against the measured GEMM throughput at the same thread count. Configurations whose memory estimate or\n"
      "predicted time exceed the limits are skipped and recorded with the reason.");
  cmd->add_option("--n", args->lengths, "Sequence lengths (comma-separated)")->delimiter(',')->capture_default_str();
  cmd->add_option("--d", args->d, "Model width d")->capture_default_str();
  cmd->add_option("--heads", args->heads, "Attention heads")->capture_default_str();
  cmd->add_option("--batch", args->batch, "Sequences per step")->capture_default_str();
  cmd->add_option("--impls", args->impls,
                  "Comma-separated implementations: attention:naive, attention:tiled, aft:full|simple|local, or a "
                  "mixer name")
      ->capture_default_str();
  cmd->add_option("--set", args->sets,
                  "A mixer option key=value for every implementation whose mixer has the key (repeatable), e.g. "
                  "--set linformer_max_len=65536 --set lsh_chunk=64");
  cmd->add_option("--repeats", args->repeats, "Timed steps per configuration (median), after one warm-up")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "Intra-op threads (0 = the cores idle at the start)")->capture_default_str();
  cmd->add_option("--topk", args->topk, "cerebra: tokens on the full path per sequence")->capture_default_str();
  cmd->add_option("--window", args->window, "cerebra: local window w")->capture_default_str();
  cmd->add_option("--memory-max", args->memory_max, "cerebra: memory slots bound")->capture_default_str();
  cmd->add_option("--mem-limit-gib", args->mem_limit_gib, "Skip configurations estimated to need more memory")
      ->capture_default_str();
  cmd->add_option("--max-lstm-n", args->max_lstm_n, "Skip lstm beyond this length (sequential, slow)")
      ->capture_default_str();
  cmd->add_option("--max-seconds", args->max_seconds,
                  "Skip a configuration whose predicted time (warm-up + repeats, scaled from the previous length "
                  "by n^p: p = 2 for attention, 1 otherwise, or the growth observed over the last two lengths "
                  "when steeper) exceeds this")
      ->capture_default_str();
  cmd->add_option("--breakdown", args->breakdown,
                  "Profile --repeats more steps per configuration and print the N ops that take the most time (from "
                  "LibTorch's RecordFunction records: outermost ATen ops and autograd backward nodes, ms per step and "
                  "share) and the time outside them; results.json gets every op (0 = off)")
      ->capture_default_str();
  cmd->add_option("--gemm-n", args->gemm_n, "Matrix size of the GEMM peak measurement")->capture_default_str();
  cmd->add_option("--out", args->out, "Output directory for results.csv and results.json")->capture_default_str();
  commands.add(cmd, [args] { return run_bench_layers(*args); });
  return cmd;
}

}  // namespace cerebra
