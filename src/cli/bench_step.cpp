// `cerebra bench step` (include/cerebra/cli/bench_step.h): full training steps of the configured model, timed by
// phase. The step is the one train_model runs (src/train/trainer.cpp) in one process, without the sampler, pruning
// or QAT:
//   zero_grad, forward, the task's loss (the compute objective for a compute-aware model), backward, the check that
//   every gradient is finite, clip_grad_norm_(grad_clip), AdamW step
// at the config's lr (the schedule's peak: the lr is a number set on the optimizer, its value costs nothing).
// The batch is the first batch_size rows of the training part, built once; its construction is not timed.
#include "cerebra/cli/bench_step.h"

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cerebra/cli/cli_config.h"
#include "cerebra/cli/command.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/core/io.h"
#include "cerebra/core/runtime.h"
#include "cerebra/data/task.h"
#include "cerebra/train/compute_objective.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/train.h"

namespace cerebra {

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct BenchStepArgs {
  ConfigArgs config;
  int warmup = 5;
  int steps = 30;
  std::string json;         // results (scripts/compare_pytorch.py reads them)
  std::string export_path;  // initial weights and the batch, for torch.load
};

// Seconds of one step's phases.
struct Phases {
  double forward = 0;    // forward and loss (and the loss read back, as the trainer does)
  double backward = 0;   // loss.backward()
  double optimizer = 0;  // zero_grad, finite check, clipping, AdamW step
  double total() const { return forward + backward + optimizer; }
};

// Everything one step needs.
struct StepContext {
  Model& model;
  const Task& task;
  const Batch& batch;
  torch::optim::AdamW& opt;
  ComputeObjective* compute;  // null unless the model is compute-aware
  double lr, grad_clip;
};

torch::Tensor loss_of(StepContext& c, const torch::Tensor& pred) {
  auto task_loss = c.task.loss(pred, c.batch);
  return c.compute ? c.compute->objective(task_loss, c.batch.size(), c.batch.mask) : task_loss;
}

// The measured FLOPs of one step (cerebra/core/flop_counter.h).
struct StepFlops {
  double forward = 0, backward = 0;
  std::map<std::string, double> forward_by_op;  // shows which kernels ran, e.g. "kernel:tiled_attention"
};

// One training step as train_model runs it; `counted` (optional) receives its FLOPs.
Phases train_step(StepContext& c, int64_t index, StepFlops* counted = nullptr) {
  Phases p;
  const auto t0 = Clock::now();
  for (auto& g : c.opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(c.lr);
  if (c.compute) c.compute->begin_step(0.0);
  c.opt.zero_grad();
  const auto t1 = Clock::now();
  torch::Tensor loss;
  double value = 0;
  {
    std::unique_ptr<FlopCounter> fc = counted ? std::make_unique<FlopCounter>() : nullptr;
    loss = loss_of(c, c.model.forward(c.batch));
    value = loss.item<double>();
    if (fc) {
      counted->forward = fc->total();
      counted->forward_by_op = fc->by_op();
    }
  }
  if (!std::isfinite(value))
    throw std::runtime_error(fmt::format("bench step: the loss is {} at step {}; the trainer would skip this step "
                                         "(lower lr)", value, index + 1));
  const auto t2 = Clock::now();
  {
    std::unique_ptr<FlopCounter> fc = counted ? std::make_unique<FlopCounter>() : nullptr;
    loss.backward();
    if (fc) counted->backward = fc->total();
  }
  const auto t3 = Clock::now();
  if (!gradients_finite(c.model))
    throw std::runtime_error(fmt::format("bench step: a gradient is not finite at step {} (lower lr)", index + 1));
  if (c.grad_clip > 0) torch::nn::utils::clip_grad_norm_(c.model.parameters(), c.grad_clip);
  c.opt.step();
  const auto t4 = Clock::now();
  p.forward = seconds(t1, t2);
  p.backward = seconds(t2, t3);
  p.optimizer = seconds(t0, t1) + seconds(t3, t4);
  return p;
}

// The loss and the gradients' total 2-norm of the initial weights on the batch in eval mode (no dropout draws):
// what another implementation of the same model must reproduce from the exported weights. Gradients are cleared
// again, so training starts as without the check.
std::pair<double, double> eval_check(StepContext& c) {
  c.model.eval();
  auto loss = c.task.loss(c.model.forward(c.batch), c.batch);
  loss.backward();
  double sq = 0;
  for (auto& p : c.model.parameters())
    if (p.grad().defined()) {
      sq += std::pow(p.grad().norm().item<double>(), 2);
      p.mutable_grad() = torch::Tensor();
    }
  c.model.train();
  return {loss.item<double>(), std::sqrt(sq)};
}

std::vector<std::pair<std::string, torch::Tensor>> batch_fields(const Batch& b) {
  return {{"num", b.num}, {"cat", b.cat}, {"tokens", b.tokens}, {"mask", b.mask}, {"y", b.y}};
}

// The initial weights ("param:" / "buffer:" + name) and the batch ("batch:" + field), pickled so that Python's
// torch.load reads them as a dict of tensors.
void export_state(const Model& model, const Batch& b, const std::string& path) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& p : model.named_parameters()) d.insert("param:" + p.key(), p.value().detach().clone());
  for (const auto& p : model.named_buffers()) d.insert("buffer:" + p.key(), p.value().detach().clone());
  for (const auto& [name, t] : batch_fields(b))
    if (t.defined()) d.insert("batch:" + name, t.contiguous());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(d));
  write_file_atomic(path, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw std::runtime_error("cannot write " + tmp);
  });
}

double mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

nlohmann::json phase_json(const std::vector<double>& s, double step_mean) {
  return {{"mean_ms", 1e3 * mean(s)}, {"median_ms", 1e3 * median(s)}, {"share", mean(s) / step_mean}};
}

nlohmann::json by_op_json(const std::map<std::string, double>& m) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [op, f] : m) j[op] = f;
  return j;
}

int run_bench_step(const CLI::App* cmd, const BenchStepArgs& a, const std::string& source_dir) {
  if (a.warmup < 0) throw ConfigError(fmt::format("--warmup must be >= 0, got {}", a.warmup));
  if (a.steps < 1) throw ConfigError(fmt::format("--steps must be >= 1, got {}", a.steps));
  const Config config = build_config(cmd, a.config);
  const RunSpec spec = parse_run_spec(config);
  if (spec.model.is_estimator())
    throw ConfigError(fmt::format("bench step: model '{}' is fitted by its own method, not trained by gradient "
                                  "steps; nothing to time", spec.model.name));
  if (spec.quant.qat)
    throw ConfigError("bench step times float32 steps; QAT (qat: true) is not applied here, set qat: false");
  if (!a.json.empty()) check_writable_dir(std::filesystem::absolute(a.json).parent_path());
  if (!a.export_path.empty()) check_writable_dir(std::filesystem::absolute(a.export_path).parent_path());
  ensure_data(spec.task, source_dir);

  const int threads = apply_runtime(spec.runtime);
  auto task = make_task(spec.task);
  const TaskInfo& info = task->info();
  torch::manual_seed(static_cast<int64_t>(spec.trainer.seed));
  auto model = make_model(spec.model, info);
  const int64_t train_size = task->size(Part::Train);
  if (train_size < 1) throw ConfigError("bench step: the task's training part is empty");
  const int64_t B = std::min(spec.trainer.batch_size, train_size);
  std::vector<int64_t> rows(static_cast<size_t>(B));
  std::iota(rows.begin(), rows.end(), 0);
  const Batch batch = task->batch(Part::Train, rows);
  // Real tokens per batch: the mask's count for padded sequences, B·n for token batches, B·(features + CLS) for
  // tabular feature tokens; 0 for models that see no tokens (mlp).
  const double tokens = batch.mask.defined()  ? batch.mask.sum().item<double>()
                        : batch.tokens.defined() ? static_cast<double>(batch.tokens.numel())
                                                 : static_cast<double>(B * model->tokens_per_example());

  torch::optim::AdamW opt(model->parameters(),
                          torch::optim::AdamWOptions(spec.trainer.lr).weight_decay(spec.trainer.weight_decay));
  std::unique_ptr<ComputeObjective> compute = std::make_unique<ComputeObjective>(*model, spec.compute);
  if (compute->active())
    compute->begin_epoch(1);  // the first epoch's mode (dense warm-up or routed), as training starts
  else
    compute.reset();
  model->train();
  StepContext ctx{*model, *task, batch, opt, compute.get(), spec.trainer.lr, spec.trainer.grad_clip};

  if (!a.export_path.empty()) export_state(*model, batch, a.export_path);
  const auto [check_loss, check_grad_norm] = eval_check(ctx);

  const int64_t params = model->parameter_count();
  std::cerr << fmt::format("bench step: {} on {} ({}), batch {} ({:.0f} tokens), {} params, threads={} (OpenMP "
                           "wait {}), blas={}\n",
                           spec.model.name, info.name, head_kind_name(info.head), B, tokens, params, threads,
                           openmp_wait_policy(), loaded_blas_library());
  for (int i = 0; i < a.warmup; ++i) train_step(ctx, i);
  std::vector<double> total, fwd, bwd, optim;
  reset_peak_tensor_bytes();
  for (int i = 0; i < a.steps; ++i) {
    const Phases p = train_step(ctx, a.warmup + i);
    total.push_back(p.total());
    fwd.push_back(p.forward);
    bwd.push_back(p.backward);
    optim.push_back(p.optimizer);
  }
  const double peak_mib = static_cast<double>(peak_tensor_bytes()) / 1048576.0;
  // The FLOPs of one more step, counted apart from the timed ones (the counter's callbacks cost time).
  StepFlops counted;
  train_step(ctx, a.warmup + a.steps, &counted);

  const double step_mean = mean(total), step_median = median(total);
  const double analytic = model->flops_per_example();
  const double step_flops = counted.forward + counted.backward;
  nlohmann::json phases = {{"forward", phase_json(fwd, step_mean)},
                           {"backward", phase_json(bwd, step_mean)},
                           {"optimizer", phase_json(optim, step_mean)}};
  std::vector<double> step_ms;
  for (double s : total) step_ms.push_back(1e3 * s);
  nlohmann::json schema = {{"n_numeric", info.schema.n_numeric},
                           {"cardinalities", info.schema.cardinalities},
                           {"n_outputs", info.schema.n_outputs}};
  nlohmann::json shapes = nlohmann::json::object();
  for (const auto& [name, t] : batch_fields(batch))
    if (t.defined()) shapes[name] = t.sizes().vec();
  nlohmann::json result = {
      {"command", "bench step"},
      {"model", spec.model.name},
      {"task", info.name},
      {"head", head_kind_name(info.head)},
      {"task_info", {{"n", info.n}, {"vocab", info.vocab}, {"n_classes", info.n_classes},
                     {"causal", info.needs_causal}, {"schema", schema}}},
      {"config", config.to_json()},
      {"params", params},
      {"threads", threads},
      {"openmp_wait_policy", openmp_wait_policy()},
      {"blas", loaded_blas_library()},
      {"machine", machine_description()},
      {"torch_version", torch_version()},
      {"batch", {{"size", B}, {"rows", "the first batch_size rows of the training part, the same batch every step"},
                 {"tokens", tokens}, {"shapes", shapes}}},
      {"optimizer", {{"name", "AdamW"}, {"lr", spec.trainer.lr}, {"weight_decay", spec.trainer.weight_decay},
                     {"betas", {0.9, 0.999}}, {"eps", 1e-8}, {"grad_clip", spec.trainer.grad_clip}}},
      {"compute_objective", compute != nullptr},
      {"warmup", a.warmup},
      {"steps", a.steps},
      {"step_ms", step_ms},
      {"mean_ms", 1e3 * step_mean},
      {"median_ms", 1e3 * step_median},
      {"examples_per_s", static_cast<double>(B) / step_mean},
      {"tokens_per_s", tokens / step_mean},
      {"phases", phases},
      {"peak_tensor_mib", peak_mib},
      {"flops", {{"analytic_forward_per_example",
                  std::isnan(analytic) ? nlohmann::json(nullptr) : nlohmann::json(analytic)},
                 {"measured_forward_per_batch", counted.forward},
                 {"measured_backward_per_batch", counted.backward},
                 {"measured_step_per_batch", step_flops},
                 {"forward_by_op", by_op_json(counted.forward_by_op)},
                 {"gflops_per_s", step_flops / step_median / 1e9},
                 {"convention", "2 per multiply-add of matmul-class ops (mm, addmm, bmm, baddbmm, convolution, "
                                "the project's kernels), forward + backward of one step"}}},
      {"check", {{"eval_loss", check_loss}, {"eval_grad_norm", check_grad_norm},
                 {"what", "loss and total gradient 2-norm of the initial weights on the batch, eval mode"}}}};
  if (!a.export_path.empty()) result["export"] = a.export_path;

  std::cout << fmt::format("{} on {}: batch {} x {:.4g} tokens, {} params, threads {}; {} warm-up + {} timed steps "
                           "(the same batch)\n",
                           spec.model.name, info.name, B, tokens / static_cast<double>(B), params, threads, a.warmup,
                           a.steps);
  std::cout << fmt::format("{:<34} {:>10} {:>10} {:>7}\n", "phase", "mean ms", "median ms", "share");
  const std::vector<std::tuple<const char*, const char*, const std::vector<double>*>> rows_out = {
      {"forward + loss", "forward", &fwd}, {"backward", "backward", &bwd},
      {"optimizer (clip, AdamW, zero_grad)", "optimizer", &optim}};
  for (const auto& [label, key, v] : rows_out)
    std::cout << fmt::format("{:<34} {:>10.3f} {:>10.3f} {:>6.1f}%\n", label, 1e3 * mean(*v), 1e3 * median(*v),
                             100.0 * phases[key]["share"].get<double>());
  std::cout << fmt::format("{:<34} {:>10.3f} {:>10.3f} {:>6.1f}%\n", "step", 1e3 * step_mean, 1e3 * step_median,
                           100.0);
  std::cout << fmt::format("examples/s {:.1f}, tokens/s {:.0f}; measured FLOPs per step {:.4g} (forward {:.4g}), "
                           "{:.2f} GFLOP/s at the median; peak tensor memory {:.1f} MiB\n",
                           static_cast<double>(B) / step_mean, tokens / step_mean, step_flops, counted.forward,
                           step_flops / step_median / 1e9, peak_mib);
  if (counted.forward_by_op.count("kernel:tiled_attention"))
    std::cout << "attention runs the tiled kernel (cerebra::ops::tiled_attention; attention_impl "
              << config.get_string("attention_impl") << ")\n";
  if (!a.json.empty()) {
    write_text_file_atomic(a.json, result.dump(2) + "\n");
    std::cerr << "wrote " << a.json << "\n";
  }
  return 0;
}

}  // namespace

CLI::App* add_bench_step_command(CLI::App* bench, const std::string& source_dir, Commands& commands) {
  auto a = std::make_shared<BenchStepArgs>();
  auto* cmd = bench->add_subcommand(
      "step",
      "Time full training steps of a model built as `cerebra train` builds it (--config FILE, --key value):\n"
      "zero_grad, forward, the task's loss, backward, finite-gradient check, clip_grad_norm_, AdamW step, on the\n"
      "first batch_size training rows (the same batch every step). Prints mean and median ms per step, examples/s,\n"
      "tokens/s, each phase's share and the measured FLOPs of a step. --threads is the config key (0 = the cores idle at the start).\n"
      "The config key `steps` (a training budget) is read from config files only: --steps here counts timed steps.");
  cmd->add_option("--warmup", a->warmup, "Untimed steps first")->capture_default_str();
  cmd->add_option("--steps", a->steps, "Timed steps")->capture_default_str();
  cmd->add_option("--json", a->json, "Write the results (and the model's shape and check values) to this file");
  cmd->add_option("--export", a->export_path,
                  "Write the initial weights and the batch to this file (a pickled dict of tensors for Python's "
                  "torch.load; scripts/compare_pytorch.py loads it)");
  add_config_options(cmd, a->config, "", {"steps"});
  commands.add(cmd, [cmd, a, source_dir] { return run_bench_step(cmd, *a, source_dir); });
  return cmd;
}

}  // namespace cerebra
