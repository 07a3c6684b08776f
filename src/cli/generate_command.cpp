// `cerebra generate` and `cerebra bench generate`: see include/cerebra/cli/generate_command.h.
#include "cerebra/cli/generate_command.h"
#include "cerebra/cli/command.h"

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cerebra/cli/cli_config.h"
#include "cerebra/core/io.h"
#include "cerebra/core/runtime.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/models/models.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace cerebra {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Whether every layer's mixer keeps a state of its own (SequenceMixer::has_recurrent_step) rather than re-running
// its prefix at each step.
bool recurrent_model(const Model& model) {
  const auto mixers = model.mixers();
  return !mixers.empty() && std::all_of(mixers.begin(), mixers.end(), [](const auto& m) {
    return m->has_recurrent_step();
  });
}

// The task a run or config trains, checked to be a causal language model: what Model::step needs.
void require_causal_lm(const TaskSpec& task, const std::string& what, const std::string& command) {
  if (is_seq_task(task.name) && seq_task_info(task).head == HeadKind::CausalLM) return;
  throw std::invalid_argument(fmt::format("{}: {} is of task '{}', which is not a causal language model; {} needs "
                                          "a character language model such as task janeausten "
                                          "(configs/janeausten.yaml)", command, what, task.name, command));
}

torch::Tensor byte_tensor(const std::string& bytes) {
  auto t = torch::empty({1, static_cast<int64_t>(bytes.size())}, torch::kInt64);
  auto* p = t.data_ptr<int64_t>();
  for (size_t i = 0; i < bytes.size(); ++i) p[i] = static_cast<unsigned char>(bytes[i]);
  return t;
}

// ---- cerebra generate

struct GenerateArgs {
  std::string run, prompt, prompt_file;
  int64_t tokens = 0;
  SamplingOptions sampling;
  uint64_t seed = 42;
  int threads = -1;  // < 0: the run's own setting
};

int run_generate(const GenerateArgs& a, bool prompt_given, bool prompt_file_given) {
  if (a.tokens < 0) throw std::invalid_argument(fmt::format("generate: --tokens must be >= 0, got {}", a.tokens));
  if (!(a.sampling.temperature >= 0) || !std::isfinite(a.sampling.temperature))
    throw std::invalid_argument(fmt::format("generate: --temperature must be >= 0 (0 = greedy), got {}",
                                            a.sampling.temperature));
  if (a.sampling.top_k < 0)
    throw std::invalid_argument(fmt::format("generate: --top-k must be >= 0 (0 = every byte), got {}",
                                            a.sampling.top_k));
  if (!prompt_given && !prompt_file_given)
    throw std::invalid_argument("generate: give the prompt with --prompt TEXT or --prompt-file FILE "
                                "(--prompt '' starts from a newline)");
  const std::string prompt = prompt_file_given ? read_text_file(a.prompt_file) : a.prompt;

  // The run: its spec, checked to be a finished causal language model, then its model. The task's data is not read.
  const fs::path dir(a.run);
  if (!fs::is_directory(dir)) throw std::runtime_error("generate: run directory '" + a.run + "' not found");
  if (!fs::exists(dir / "config.yaml"))
    throw std::runtime_error("generate: '" + a.run + "' is not a run directory (no config.yaml; `cerebra train "
                             "--out DIR` writes one)");
  RunSpec spec = read_run_spec(a.run, a.threads);
  require_causal_lm(spec.task, "run '" + a.run + "'", "generate");
  if (!fs::exists(dir / checkpoint_name(spec.model.name)))
    throw std::runtime_error(fmt::format("generate: run '{}' has no trained model ({} is missing: the run is not "
                                         "finished; `cerebra train --resume --out {}` completes it)", a.run,
                                         checkpoint_name(spec.model.name), a.run));
  const int threads = apply_runtime(spec.runtime);
  const TaskInfo info = seq_task_info(spec.task);
  std::shared_ptr<Model> model = load_run_model(spec, info, a.run);
  model->eval();
  torch::NoGradGuard no_grad;

  // The prompt in one chunk; an empty prompt starts the model from a newline byte, which is not printed.
  const std::string context = prompt.empty() ? std::string("\n") : prompt;
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fflush(stdout);
  GenerationState state;
  auto t0 = Clock::now();
  torch::Tensor logits = model->step(byte_tensor(context), state);
  const double prefill_s = seconds_since(t0);
  torch::Tensor next = logits[0][logits.size(1) - 1];

  // One byte per step: drawn from the last logits, printed, fed back.
  std::mt19937_64 rng(a.seed);
  auto token = torch::empty({1, 1}, torch::kInt64);
  t0 = Clock::now();
  for (int64_t i = 0; i < a.tokens; ++i) {
    const int64_t b = sample_token(next, a.sampling, rng);
    std::fputc(static_cast<int>(b), stdout);
    std::fflush(stdout);
    token.fill_(b);
    next = model->step(token, state)[0][0];
  }
  const double gen_s = seconds_since(t0);
  if (::isatty(STDOUT_FILENO)) std::fputc('\n', stdout);  // a terminal's summary starts on its own line
  std::fflush(stdout);

  const auto ctx = static_cast<double>(context.size());
  std::cerr << fmt::format(
      "generate: {} ({} params, {}) from {}\n"
      "prompt {} tokens{}, prefill {:.0f} tokens/s | generated {} tokens, {} tokens/s ({} ms/token)\n"
      "state {:.3f} MiB ({} bytes) after {} tokens | temperature {}, top-k {}, seed {}, threads {}\n",
      spec.model.name, model->parameter_count(),
      recurrent_model(*model) ? "recurrent state" : "re-reads its prefix at each step", a.run, prompt.size(),
      prompt.empty() ? " (started from a newline)" : "", prefill_s > 0 ? ctx / prefill_s : 0.0, a.tokens,
      a.tokens > 0 && gen_s > 0 ? fmt::format("{:.1f}", static_cast<double>(a.tokens) / gen_s) : std::string("-"),
      a.tokens > 0 ? fmt::format("{:.2f}", 1e3 * gen_s / static_cast<double>(a.tokens)) : std::string("-"),
      static_cast<double>(state.bytes()) / kMiB, state.bytes(), state.position, a.sampling.temperature,
      a.sampling.top_k, a.seed, threads);
  return 0;
}

// ---- cerebra bench generate

struct BenchGenerateArgs {
  ConfigArgs config;
  std::string models = "transformer,mamba,lstm,cnn,cerebra";
  std::vector<int64_t> contexts{256, 1024, 4096};
  int64_t tokens = 64;
  int64_t chunk = 256;
  double max_seconds = 60.0;
  std::string out = "runs/bench-generate";
};

struct GenRecord {
  std::string model;
  int64_t context = 0;
  std::string status;  // ok | skipped | error
  std::string reason;
  bool recurrent = false;
  int64_t params = 0, steps = 0, state_bytes = 0;
  double prefill_tokens_per_s = 0, tokens_per_s = 0, ms_per_token = 0, ms_median = 0;
};

std::vector<std::string> split_models(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string m; std::getline(ss, m, ',');) {
    m.erase(0, m.find_first_not_of(" \t"));
    m.erase(m.find_last_not_of(" \t") + 1);
    if (!m.empty()) out.push_back(m);
  }
  return out;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// A random context of r.context bytes prefilled in chunks, one untimed single-byte step, then `tokens` single-byte
// steps timed one by one (each fed the greedy byte of the previous step), stopping early once max_seconds have
// passed (at least one step).
void measure_generation(Model& model, const BenchGenerateArgs& a, uint64_t seed, GenRecord& r) {
  std::mt19937_64 rng(seed + static_cast<uint64_t>(r.context));
  std::string context(static_cast<size_t>(r.context), '\0');
  for (auto& c : context) c = static_cast<char>(rng() & 0xff);
  GenerationState state;
  torch::Tensor logits;
  auto t0 = Clock::now();
  for (int64_t at = 0; at < r.context; at += a.chunk)
    logits = model.step(byte_tensor(context.substr(static_cast<size_t>(at), static_cast<size_t>(a.chunk))), state);
  r.prefill_tokens_per_s = static_cast<double>(r.context) / std::max(seconds_since(t0), 1e-12);
  torch::Tensor next = logits[0][logits.size(1) - 1];
  auto token = torch::empty({1, 1}, torch::kInt64);
  token.fill_(next.argmax().item<int64_t>());  // one untimed warm-up step
  next = model.step(token, state)[0][0];
  std::vector<double> times;
  const auto start = Clock::now();
  for (int64_t i = 0; i < a.tokens; ++i) {
    token.fill_(next.argmax().item<int64_t>());
    t0 = Clock::now();
    next = model.step(token, state)[0][0];
    times.push_back(seconds_since(t0));
    if (seconds_since(start) > a.max_seconds) break;
  }
  const double total = std::accumulate(times.begin(), times.end(), 0.0);
  r.steps = static_cast<int64_t>(times.size());
  r.tokens_per_s = static_cast<double>(r.steps) / std::max(total, 1e-12);
  r.ms_per_token = 1e3 * total / static_cast<double>(r.steps);
  r.ms_median = 1e3 * median(times);
  r.state_bytes = state.bytes();
  r.status = "ok";
  if (r.steps < a.tokens)
    r.reason = fmt::format("{} of {} steps within --max-seconds {}", r.steps, a.tokens, a.max_seconds);
}

int run_bench_generate(const CLI::App* cmd, const BenchGenerateArgs& a) {
  if (a.tokens < 1) throw std::invalid_argument(fmt::format("bench generate: --tokens must be >= 1, got {}", a.tokens));
  if (a.chunk < 1) throw std::invalid_argument(fmt::format("bench generate: --chunk must be >= 1, got {}", a.chunk));
  if (!(a.max_seconds > 0))
    throw std::invalid_argument(fmt::format("bench generate: --max-seconds must be > 0, got {}", a.max_seconds));
  if (a.contexts.empty()) throw std::invalid_argument("bench generate: --contexts is empty");
  for (int64_t L : a.contexts)
    if (L < 1) throw std::invalid_argument(fmt::format("bench generate: context lengths must be >= 1, got {}", L));
  const std::vector<std::string> models = split_models(a.models);
  if (models.empty()) throw std::invalid_argument("bench generate: --models is empty");
  const Config base = build_config(cmd, a.config);
  RunSpec base_spec = parse_run_spec(base);
  require_causal_lm(base_spec.task, "the config", "bench generate");
  const int threads = apply_runtime(base_spec.runtime);
  check_writable_dir(a.out);
  const TaskInfo info = seq_task_info(base_spec.task);
  const uint64_t seed = base_spec.task.seed;

  std::printf("machine  %s\nthreads  %d\n", machine_description().c_str(), threads);
  std::printf("task     %s, batch 1; random context prefilled in chunks of %lld, one warm-up step, then %lld timed "
              "single-byte steps\n",
              info.name.c_str(), static_cast<long long>(a.chunk), static_cast<long long>(a.tokens));
  std::printf("tokens/s and ms/token over the timed steps; state = GenerationState::bytes() after them; recurrent = "
              "every layer's mixer has its own step\n\n");
  std::printf("%-12s %8s %9s %9s %12s %12s %10s %10s %12s  %s\n", "model", "context", "recurrent", "params",
              "prefill t/s", "tokens/s", "ms/token", "median ms", "state MiB", "note");
  std::fflush(stdout);

  torch::NoGradGuard no_grad;
  std::vector<GenRecord> records;
  const size_t total = models.size() * a.contexts.size();
  size_t index = 0;
  int errors = 0;
  for (const auto& m : models) {
    std::shared_ptr<Model> model;
    std::string build_error;
    try {
      Config c = base;
      c.set("model", m, "--models");
      const RunSpec spec = parse_run_spec(c);
      torch::manual_seed(seed);
      model = make_model(spec.model, info);  // refuses a mixer without a causal form
      model->eval();
    } catch (const std::exception& e) {
      build_error = e.what();
    }
    for (int64_t L : a.contexts) {
      ++index;
      GenRecord r;
      r.model = m;
      r.context = L;
      if (!model) {
        r.status = "skipped";
        r.reason = build_error.substr(0, build_error.find('\n'));
      } else {
        r.params = model->parameter_count();
        r.recurrent = recurrent_model(*model);
        std::fprintf(stderr, "[%zu/%zu] %s context %lld ...\n", index, total, m.c_str(), static_cast<long long>(L));
        try {
          measure_generation(*model, a, seed, r);
        } catch (const c10::Error& e) {
          r.status = "error";
          r.reason = e.what_without_backtrace();
        } catch (const std::exception& e) {
          r.status = "error";
          r.reason = e.what();
        }
        if (r.status == "error") {
          r.reason = r.reason.substr(0, r.reason.find('\n'));
          ++errors;
        }
      }
      if (r.status == "ok")
        std::printf("%-12s %8lld %9s %9lld %12.0f %12.1f %10.3f %10.3f %12.3f  %s\n", m.c_str(),
                    static_cast<long long>(L), r.recurrent ? "yes" : "no", static_cast<long long>(r.params),
                    r.prefill_tokens_per_s, r.tokens_per_s, r.ms_per_token, r.ms_median,
                    static_cast<double>(r.state_bytes) / kMiB, r.reason.c_str());
      else
        std::printf("%-12s %8lld %9s %9s %12s %12s %10s %10s %12s  %s: %s\n", m.c_str(), static_cast<long long>(L),
                    "-", "-", "-", "-", "-", "-", "-", r.status.c_str(), r.reason.c_str());
      std::fflush(stdout);
      records.push_back(r);
    }
  }

  const fs::path dir(a.out);
  std::ostringstream csv;
  csv << "model,context,status,recurrent,params,threads,steps,prefill_tokens_per_s,tokens_per_s,ms_per_token,"
         "ms_median,state_bytes,state_mib,reason\n";
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : records) {
    const bool ok = r.status == "ok";
    csv << csv_field(r.model) << ',' << r.context << ',' << r.status << ',';
    if (ok)
      csv << fmt::format("{},{},{},{},{:.1f},{:.2f},{:.4f},{:.4f},{},{:.4f},", r.recurrent ? "true" : "false",
                         r.params, threads, r.steps, r.prefill_tokens_per_s, r.tokens_per_s, r.ms_per_token,
                         r.ms_median, r.state_bytes, static_cast<double>(r.state_bytes) / kMiB);
    else
      csv << fmt::format(",,{},,,,,,,,", threads);
    csv << csv_field(r.reason) << '\n';
    nlohmann::json j = {{"model", r.model}, {"context", r.context}, {"status", r.status}, {"reason", r.reason}};
    if (ok) {
      j["recurrent"] = r.recurrent;
      j["params"] = r.params;
      j["steps"] = r.steps;
      j["prefill_tokens_per_s"] = r.prefill_tokens_per_s;
      j["tokens_per_s"] = r.tokens_per_s;
      j["ms_per_token"] = r.ms_per_token;
      j["ms_median"] = r.ms_median;
      j["state_bytes"] = r.state_bytes;
      j["state_mib"] = static_cast<double>(r.state_bytes) / kMiB;
    }
    rows.push_back(j);
  }
  const nlohmann::json doc = {{"machine", machine_description()},
                              {"threads", threads},
                              {"torch", torch_version()},
                              {"task", info.name},
                              {"config", base_spec.config.changed()},
                              {"tokens", a.tokens},
                              {"chunk", a.chunk},
                              {"batch", 1},
                              {"results", rows}};
  write_text_file(dir / "results.csv", csv.str());
  write_text_file(dir / "results.json", doc.dump(2) + "\n");
  std::printf("\nwrote %s and %s\n", (dir / "results.csv").string().c_str(), (dir / "results.json").string().c_str());
  return errors > 0 ? 1 : 0;
}

}  // namespace

int64_t sample_token(const at::Tensor& logits, const SamplingOptions& o, std::mt19937_64& rng) {
  if (!(o.temperature >= 0))
    throw std::invalid_argument(fmt::format("temperature must be >= 0, got {}", o.temperature));
  if (o.top_k < 0) throw std::invalid_argument(fmt::format("top-k must be >= 0, got {}", o.top_k));
  const auto l = logits.detach().to(torch::kCPU, torch::kDouble).contiguous().view(-1);
  const int64_t V = l.numel();
  if (V == 0) throw std::invalid_argument("sample_token: no logits");
  const double* p = l.data_ptr<double>();
  for (int64_t v = 0; v < V; ++v)
    if (!std::isfinite(p[v])) throw std::invalid_argument(fmt::format("sample_token: logit {} is {}", v, p[v]));
  // The k largest logits, largest first; the lower token first on a tie.
  const int64_t k = o.top_k == 0 || o.top_k > V ? V : o.top_k;
  std::vector<int64_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [p](int64_t a, int64_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  if (o.temperature == 0) return order[0];
  std::vector<double> w(static_cast<size_t>(k));
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += (w[i] = std::exp((p[order[i]] - p[order[0]]) / o.temperature));
  // A uniform draw in [0, 1) from the top 53 bits: the same on every standard library.
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * sum;
  double cum = 0;
  for (int64_t i = 0; i < k; ++i)
    if (u < (cum += w[i])) return order[i];
  return order[k - 1];
}

CLI::App* add_generate_command(CLI::App* app, Commands& commands) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app->add_subcommand(
      "generate",
      "Generate text with a trained character language model (a janeausten run): the prompt's bytes go through\n"
      "the model in one chunk, then --tokens bytes are sampled one step at a time and printed as they come.\n"
      "stdout: the prompt, then the generated bytes (a final newline only on a terminal). stderr: the model, prompt\n"
      "and generated tokens, prefill and generation tokens/s, and the memory of the generation state at the end.\n"
      "Sampling: softmax(logits / temperature) over the top-k bytes, in double precision, with a std::mt19937_64\n"
      "seeded by --seed: the same run, prompt and seed give the same text; temperature 0 is greedy.");
  cmd->add_option("--run", a->run, "Run directory written by `cerebra train` (task janeausten)")->required();
  auto* prompt = cmd->add_option("--prompt", a->prompt, "Prompt text, as bytes; '' starts from a newline byte "
                                                        "(not printed)");
  auto* prompt_file = cmd->add_option("--prompt-file", a->prompt_file, "Read the prompt from this file instead");
  prompt->excludes(prompt_file);
  cmd->add_option("--tokens", a->tokens, "Bytes to generate (>= 0)")->required();
  cmd->add_option("--temperature", a->sampling.temperature, "Softmax temperature (> 0), or 0 for greedy")
      ->capture_default_str();
  cmd->add_option("--top-k", a->sampling.top_k, "Sample among the k most likely bytes (0 = all)")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the sampler")->capture_default_str();
  cmd->add_option("--threads", a->threads, "Intra-op threads, 0 = the cores idle at the start (default: the run's setting)");
  commands.add(cmd, [a, prompt, prompt_file] {
    return run_generate(*a, prompt->count() > 0, prompt_file->count() > 0);
  });
  return cmd;
}

CLI::App* add_bench_generate_command(CLI::App* bench, Commands& commands) {
  auto a = std::make_shared<BenchGenerateArgs>();
  auto* cmd = bench->add_subcommand(
      "generate",
      "Generation speed per model and context length: each model is built from the config (untrained weights), a\n"
      "random context of each length is prefilled through Model::step in chunks, then after one untimed step\n"
      "--tokens single-byte steps are timed. Reports generation tokens/s, ms/token, the state's memory\n"
      "(GenerationState::bytes()) and whether every layer has a recurrent step; flat tokens/s across contexts marks\n"
      "a recurrent state, falling tokens/s a key/value cache or a prefix re-read. Needs a causal language model\n"
      "task: --config configs/janeausten.yaml. Config keys (--d_model, --threads, ...) apply to every model.\n"
      "Writes <out>/results.csv and <out>/results.json.");
  cmd->add_option("--models", a->models, "Comma-separated models (transformer or a mixer name)")
      ->capture_default_str();
  cmd->add_option("--contexts", a->contexts, "Context lengths (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--tokens", a->tokens, "Timed single-byte steps after each context")->capture_default_str();
  cmd->add_option("--chunk", a->chunk, "Bytes per step of the context's prefill")->capture_default_str();
  cmd->add_option("--max-seconds", a->max_seconds,
                  "Stop a configuration's timed steps once they have taken this long (at least one step runs)")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "Output directory for results.csv and results.json")->capture_default_str();
  add_config_options(cmd, a->config, " (the models built)");
  commands.add(cmd, [cmd, a] { return run_bench_generate(cmd, *a); });
  return cmd;
}

}  // namespace cerebra
