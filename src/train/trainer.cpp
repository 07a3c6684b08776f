#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/core/io.h"
#include "cerebra/core/state_archive.h"
#include "cerebra/train/distributed.h"
#include "cerebra/train/train.h"

namespace cerebra {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string format_eta(double s) {
  int t = static_cast<int>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%d:%02d", t / 60, t % 60);
  return buf;
}

// One status line on stderr, redrawn in place; silent when stderr is not a terminal or when quiet.
class Progress {
 public:
  explicit Progress(bool quiet) : enabled_(!quiet && isatty(STDERR_FILENO)) {}
  ~Progress() { finish(); }
  void update(int64_t epoch, int64_t epochs, int64_t batch, int64_t batches, double loss, double ex_per_s,
              double eta_s) {
    if (!enabled_) return;
    auto now = Clock::now();
    if (batch != batches && std::chrono::duration<double>(now - last_).count() < 0.2) return;
    last_ = now;
    std::fprintf(stderr, "\r  epoch %lld/%lld  batch %lld/%lld  loss %.4f  %.0f ex/s  ETA %s   ",
                 static_cast<long long>(epoch), static_cast<long long>(epochs), static_cast<long long>(batch),
                 static_cast<long long>(batches), loss, ex_per_s, format_eta(eta_s).c_str());
    std::fflush(stderr);
    drawn_ = true;
  }
  void finish() {
    if (drawn_) std::fprintf(stderr, "\r%*s\r", 100, "");
    drawn_ = false;
  }

 private:
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point last_ = Clock::now();
};

double lr_at(const TrainerOptions& o, int64_t step, int64_t total, int64_t warmup) {
  if (step < warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double floor = o.lr * o.min_lr_ratio;
  const double p = total > warmup ? static_cast<double>(step - warmup) / static_cast<double>(total - warmup) : 1.0;
  if (o.lr_schedule == "constant") return o.lr;
  if (o.lr_schedule == "linear") return o.lr - (o.lr - floor) * p;
  return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * p));
}

using Named = std::vector<std::pair<std::string, torch::Tensor>>;

// Parameters then buffers, by path.
Named named_state(const Model& model) {
  Named s;
  for (const auto& p : model.named_parameters()) s.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) s.emplace_back(b.key(), b.value());
  return s;
}

std::vector<torch::Tensor> snapshot(const Model& model) {
  std::vector<torch::Tensor> s;
  for (const auto& p : model.parameters()) s.push_back(p.detach().clone());
  for (const auto& b : model.buffers()) s.push_back(b.detach().clone());
  return s;
}

void restore(Model& model, const std::vector<torch::Tensor>& s) {
  torch::NoGradGuard g;
  size_t i = 0;
  for (auto& p : model.parameters()) p.copy_(s[i++]);
  for (auto& b : model.buffers()) b.copy_(s[i++]);
}

// A snapshot read from a checkpoint, in the order of the model's own parameters and buffers.
std::vector<torch::Tensor> snapshot_from(const Model& model, const Named& saved) {
  std::map<std::string, torch::Tensor> by_name(saved.begin(), saved.end());
  std::vector<torch::Tensor> s;
  for (const auto& [name, t] : named_state(model)) {
    auto it = by_name.find(name);
    TORCH_CHECK(it != by_name.end(), "the best weights have no '", name, "'");
    TORCH_CHECK(it->second.sizes() == t.sizes(), "the best weights' '", name, "' is ", it->second.sizes(),
                ", the model's ", t.sizes());
    s.push_back(it->second);
  }
  TORCH_CHECK(s.size() == saved.size(), "the best weights hold ", saved.size(), " tensors, the model ", s.size());
  return s;
}

// group_by_length: the positions of an epoch's order, windows of 50 batches each sorted by their examples' length
// (stably, so equal lengths keep the shuffle), cut into batches whose full ones are then shuffled; a last partial
// batch stays last. Every position is kept once, and each batch pads to a length near its examples' own.
void group_by_length(std::vector<int64_t>& pos, const std::vector<int64_t>& rows,
                     const std::function<int64_t(int64_t)>& length, int64_t batch, std::mt19937_64& rng) {
  constexpr int64_t kWindowBatches = 50;
  const auto n = static_cast<int64_t>(pos.size());
  std::vector<int64_t> len(pos.size());
  for (int64_t i = 0; i < n; ++i) len[i] = length(rows[static_cast<size_t>(pos[i])]);
  std::vector<int64_t> at(pos.size());  // indices into pos, grouped
  std::iota(at.begin(), at.end(), 0);
  for (int64_t lo = 0; lo < n; lo += kWindowBatches * batch) {
    const int64_t hi = std::min(n, lo + kWindowBatches * batch);
    std::stable_sort(at.begin() + lo, at.begin() + hi, [&](int64_t a, int64_t b) { return len[a] < len[b]; });
  }
  const int64_t full = n / batch;
  std::vector<int64_t> order(static_cast<size_t>(full));
  std::iota(order.begin(), order.end(), 0);
  for (int64_t i = full - 1; i > 0; --i) std::swap(order[i], order[static_cast<int64_t>(rng() % (i + 1))]);
  std::vector<int64_t> out;
  out.reserve(pos.size());
  for (int64_t b : order)
    for (int64_t i = b * batch; i < (b + 1) * batch; ++i) out.push_back(pos[at[i]]);
  for (int64_t i = full * batch; i < n; ++i) out.push_back(pos[at[i]]);
  pos = std::move(out);
}

constexpr int64_t kCheckpointFormat = 1;

}  // namespace

torch::Tensor predict(Model& model, const std::vector<int64_t>& rows, int64_t batch_size,
                      const std::function<Batch(const std::vector<int64_t>&)>& make_batch) {
  torch::NoGradGuard g;
  bool was_training = model.is_training();
  model.eval();
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < rows.size(); i += static_cast<size_t>(batch_size)) {
    std::vector<int64_t> idx(rows.begin() + i, rows.begin() + std::min(rows.size(), i + batch_size));
    out.push_back(model.forward(make_batch(idx)));
  }
  model.train(was_training);
  return torch::cat(out, 0);
}

TrainResult train_model(Model& model, const std::vector<int64_t>& train_rows, const std::vector<int64_t>& val_rows,
                        const TrainerOptions& o, const TrainerHooks& hooks) {
  TORCH_CHECK(!train_rows.empty(), "train_model: no training rows");
  TORCH_CHECK(!o.group_by_length || hooks.example_length, "train_model: group_by_length needs the example_length hook");
  if (o.nan_policy != "stop" && o.nan_policy != "skip")
    throw std::invalid_argument("train_model: nan_policy must be stop or skip, got '" + o.nan_policy + "'");
  auto make_optimizer = [&] {
    return std::make_unique<torch::optim::AdamW>(model.parameters(),
                                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  };
  std::unique_ptr<torch::optim::AdamW> opt = make_optimizer();
  const int64_t n = static_cast<int64_t>(train_rows.size());
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  const int64_t total_steps = steps_per_epoch * o.epochs;
  const int64_t warmup = std::max<int64_t>(1, static_cast<int64_t>(std::llround(o.warmup_epochs * steps_per_epoch)));
  Distributed* const dist = o.dist;  // null: one process
  const bool writer = !dist || dist->root();

  auto val_loss_of = [&]() {
    if (val_rows.empty()) return std::nan("");
    torch::NoGradGuard g;
    model.eval();
    double sum = 0;
    int64_t k = 0;  // distributed: rank r evaluates the batches k with k % world_size == r
    for (size_t i = 0; i < val_rows.size(); i += static_cast<size_t>(o.eval_batch_size), ++k) {
      if (dist && k % dist->world_size() != dist->rank()) continue;
      std::vector<int64_t> idx(val_rows.begin() + i,
                               val_rows.begin() + std::min(val_rows.size(), i + o.eval_batch_size));
      Batch b = hooks.make_batch(idx);
      sum += hooks.loss(model.forward(b), b).item<double>() * static_cast<double>(idx.size());
    }
    if (dist) {
      std::vector<double> total{sum};
      dist->allreduce_sum(total, "the validation loss");
      sum = total[0];
    }
    model.train();
    return sum / static_cast<double>(val_rows.size());
  };
  // Ranks other than 0 draw from streams of their own (dropout, noise), reseeded from the seed, the rank and the
  // step at the start and at every checkpoint, so a resumed run continues as one never stopped.
  auto reseed_rank = [&](int64_t steps) {
    if (!writer)
      torch::manual_seed(o.seed * 1000003ULL + static_cast<uint64_t>(dist->rank()) * 7919ULL +
                         static_cast<uint64_t>(steps));
  };

  // ---- the state of training: everything below is in the resume checkpoint
  TrainResult r;
  r.best_val_loss = std::numeric_limits<double>::infinity();
  std::vector<torch::Tensor> best = snapshot(model);
  std::vector<int64_t> perm(static_cast<size_t>(n)), order(train_rows);  // positions and the rows they stand for
  std::iota(perm.begin(), perm.end(), 0);
  std::vector<int64_t> epoch_pos;  // this epoch's positions, in training order
  std::unique_ptr<Sampler> sampler;
  if (o.sampler.enabled) {
    TORCH_CHECK(hooks.per_example_loss, "train_model: the compute-aware sampler needs a per-example loss");
    sampler = std::make_unique<Sampler>(n, o.sampler);
  }
  int64_t step = 0, since_best = 0, examples_seen = 0, metrics_bytes = 0, steps_bytes = 0;
  double log_loss_sum = 0;  // task loss × examples since the last steps.jsonl line
  int64_t log_examples = 0;
  Clock::time_point log_t0 = Clock::now();
  double train_seconds = 0;
  double loss_sum = 0, epoch_elapsed = 0;  // of the epoch being trained
  int64_t start_epoch = 1, start_batch = 0;
  bool finished = false;
  std::string last_checkpoint = "none written yet";

  // `epoch` and `batch`: where training goes on; `steps` done so far; `elapsed`: seconds of this epoch so far.
  auto write_checkpoint = [&](int64_t epoch, int64_t batch, int64_t steps, double elapsed, bool done) {
    if (o.checkpoint_path.empty()) return;
    if (!writer) return reseed_rank(steps);  // rank 0 writes the checkpoint
    torch::serialize::OutputArchive ar;
    write_int(ar, "format", kCheckpointFormat);
    write_int(ar, "train_examples", n);
    write_int(ar, "steps_per_epoch", steps_per_epoch);
    write_int(ar, "epoch", epoch);  // the epoch to train next (or being trained, from `batch`)
    write_int(ar, "batch", batch);
    write_int(ar, "step", steps);
    write_int(ar, "done", done ? 1 : 0);
    write_int(ar, "since_best", since_best);
    write_int(ar, "best_epoch", r.best_epoch);
    write_double(ar, "best_val_loss", r.best_val_loss);
    write_int(ar, "epochs_run", r.epochs_run);
    write_doubles(ar, "epoch_seconds", r.epoch_seconds);
    write_int(ar, "nan_skipped_steps", r.nan_skipped_steps);
    write_int(ar, "resumes", r.resumes);
    write_double(ar, "train_seconds", train_seconds);
    write_int(ar, "examples_seen", examples_seen);
    write_double(ar, "loss_sum", loss_sum);
    write_double(ar, "epoch_elapsed", elapsed);
    write_ints(ar, "perm", perm);
    write_ints(ar, "epoch_pos", epoch_pos);
    write_int(ar, "metrics_bytes", metrics_bytes);
    write_int(ar, "steps_bytes", steps_bytes);
    write_double(ar, "log_loss_sum", log_loss_sum);
    write_int(ar, "log_examples", log_examples);
    ar.write("torch_rng", at::detail::getDefaultCPUGenerator().get_state(), /*is_buffer=*/true);
    torch::serialize::OutputArchive weights, optimizer, hook_state;
    model.save(weights);
    ar.write("model", weights);
    opt->save(optimizer);
    ar.write("optimizer", optimizer);
    Named best_named = named_state(model);
    for (size_t i = 0; i < best_named.size(); ++i) best_named[i].second = best[i];
    write_tensors(ar, "best", best_named);
    if (sampler) {
      torch::serialize::OutputArchive sub;
      sampler->save(sub);
      ar.write("sampler", sub);
    }
    if (hooks.save_state) hooks.save_state(hook_state);
    ar.write("hooks", hook_state);
    write_file_atomic(o.checkpoint_path, [&](const std::string& tmp) { ar.save_to(tmp); });
    last_checkpoint = fmt::format("epoch {}, step {}, in {}", batch > 0 ? epoch : epoch - 1, steps, o.checkpoint_path);
  };

  std::string saved;  // the resume checkpoint's bytes (distributed: rank 0's, sent to every rank)
  if (writer && o.resume && !o.checkpoint_path.empty() && std::filesystem::exists(o.checkpoint_path))
    saved = read_text_file(o.checkpoint_path);
  if (dist) saved = dist->broadcast_bytes(std::move(saved), "sending the resume checkpoint");
  if (!saved.empty()) {
    try {
      torch::serialize::InputArchive ar;
      load_archive_bytes(ar, saved);
      TORCH_CHECK(read_int(ar, "format") == kCheckpointFormat, "unknown checkpoint format");
      TORCH_CHECK(read_int(ar, "train_examples") == n && read_int(ar, "steps_per_epoch") == steps_per_epoch,
                  "it was written for ", read_int(ar, "train_examples"), " training examples in batches of ",
                  read_int(ar, "steps_per_epoch"), " per epoch; this run has ", n, " and ", steps_per_epoch);
      torch::serialize::InputArchive hook_state, weights, optimizer;
      ar.read("hooks", hook_state);
      if (hooks.load_state) hooks.load_state(hook_state);  // first: the model's pruned shapes, modes
      ar.read("model", weights);
      model.load(weights);
      opt = make_optimizer();
      ar.read("optimizer", optimizer);
      opt->load(optimizer);
      best = snapshot_from(model, read_tensors(ar, "best"));
      if (sampler) {
        torch::serialize::InputArchive sub;
        ar.read("sampler", sub);
        sampler->load(sub);
      }
      start_epoch = read_int(ar, "epoch");
      start_batch = read_int(ar, "batch");
      step = read_int(ar, "step");
      finished = read_int(ar, "done") != 0;
      since_best = read_int(ar, "since_best");
      r.best_epoch = read_int(ar, "best_epoch");
      r.best_val_loss = read_double(ar, "best_val_loss");
      r.epochs_run = read_int(ar, "epochs_run");
      r.epoch_seconds = read_doubles(ar, "epoch_seconds");
      r.nan_skipped_steps = read_int(ar, "nan_skipped_steps");
      r.resumes = read_int(ar, "resumes") + 1;
      train_seconds = read_double(ar, "train_seconds");
      examples_seen = read_int(ar, "examples_seen");
      loss_sum = read_double(ar, "loss_sum");
      epoch_elapsed = read_double(ar, "epoch_elapsed");
      perm = read_ints(ar, "perm");
      epoch_pos = read_ints(ar, "epoch_pos");
      metrics_bytes = read_int(ar, "metrics_bytes");
      c10::IValue v;  // absent from checkpoints written before steps.jsonl existed
      if (ar.try_read("steps_bytes", v) && v.isInt()) steps_bytes = v.toInt();
      if (ar.try_read("log_loss_sum", v) && v.isDouble()) log_loss_sum = v.toDouble();
      if (ar.try_read("log_examples", v) && v.isInt()) log_examples = v.toInt();
      TORCH_CHECK(static_cast<int64_t>(perm.size()) == n, "the permutation has ", perm.size(), " entries");
      TORCH_CHECK(start_batch == 0 || static_cast<int64_t>(epoch_pos.size()) == n, "the epoch order has ",
                  epoch_pos.size(), " entries");
      torch::Tensor rng;
      ar.read("torch_rng", rng, /*is_buffer=*/true);
      at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle on torch's default generator
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(rng);
      saved.clear();
    } catch (const c10::Error& e) {
      throw std::runtime_error("cannot resume from " + o.checkpoint_path + ": " + e.what_without_backtrace());
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot resume from " + o.checkpoint_path + ": " + e.what());
    }
    last_checkpoint = fmt::format("epoch {}, step {}, in {}", start_batch > 0 ? start_epoch : start_epoch - 1, step,
                                  o.checkpoint_path);
    if (!o.quiet)
      std::cerr << (finished ? fmt::format("  training had finished (epoch {}, step {}); resuming after it\n",
                                           r.epochs_run, step)
                             : fmt::format("  resuming at epoch {}, batch {} of {} (step {}) from {}\n", start_epoch,
                                           start_batch + 1, steps_per_epoch, step + 1, o.checkpoint_path));
  }

  // A log file: new, or on resume cut back to the `bytes` the checkpoint records (lines written after it go).
  auto open_log = [&](std::ofstream& f, const std::string& path, int64_t bytes) {
    if (path.empty()) return;
    if (r.resumes > 0) {
      std::error_code ec;
      const auto size = std::filesystem::file_size(path, ec);
      if (ec && bytes == 0) {
        f.open(path);
      } else {
        if (ec || static_cast<int64_t>(size) < bytes)
          throw std::runtime_error("cannot resume: " + path + " is shorter than the checkpoint records (" +
                                   std::to_string(bytes) + " bytes)");
        std::filesystem::resize_file(path, static_cast<uintmax_t>(bytes));
        f.open(path, std::ios::app);
      }
    } else {
      f.open(path);
    }
    if (!f) throw std::runtime_error("cannot write " + path);
  };
  std::ofstream metrics, steps_log;
  open_log(metrics, o.metrics_path, metrics_bytes);
  open_log(steps_log, o.steps_path, steps_bytes);
  // One JSON line appended and flushed; `bytes` (what the checkpoint records) grows by its length.
  auto append_line = [](std::ofstream& f, const std::string& path, const nlohmann::json& line, int64_t& bytes) {
    const std::string text = line.dump() + "\n";
    f << text;
    f.flush();
    if (!f) throw std::runtime_error("cannot write " + path);
    bytes += static_cast<int64_t>(text.size());
  };

  // A non-finite loss or gradient at this step: stops training (policy stop, or too many skipped), or counts a skip.
  auto non_finite = [&](const std::string& what, int64_t epoch, int64_t batch) {
    const std::string where = fmt::format("epoch {}, step {} (batch {} of {})", epoch, step + 1, batch + 1,
                                          steps_per_epoch);
    if (o.nan_policy == "skip") {
      ++r.nan_skipped_steps;
      if (r.nan_skipped_steps <= o.nan_skip_limit) return;
      throw TrainingDiverged(fmt::format("training stopped: {} at {}, and {} steps were skipped for non-finite "
                                         "values (nan_skip_limit {}); the last good checkpoint is {}",
                                         what, where, r.nan_skipped_steps, o.nan_skip_limit, last_checkpoint));
    }
    throw TrainingDiverged(fmt::format("training stopped: {} at {}; the weights were not updated from it and the "
                                       "last good checkpoint is {} (lower lr, or nan_policy: skip)",
                                       what, where, last_checkpoint));
  };

  Progress progress(o.quiet);
  model.train();
  if (dist) dist->attach(model);
  reseed_rank(step);

  for (int64_t epoch = start_epoch; epoch <= o.epochs && !finished; ++epoch) {
    const bool sampled = sampler && o.sampler.active(epoch);
    const int64_t first_batch = epoch == start_epoch ? start_batch : 0;
    if (first_batch == 0) {  // a new epoch (a resumed one has its order, sums and hook state from the checkpoint)
      // Seeded Fisher-Yates per epoch: the same seed gives the same batches.
      std::mt19937_64 rng(o.seed * 1000003ULL + static_cast<uint64_t>(epoch));
      if (sampled) {
        // Compute-aware sampler: N draws with replacement from p ∝ exp(β·ρ̃ − γ·Ĉ), with the uniform floor.
        epoch_pos = sampler->draw(n, rng);
      } else {
        for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[static_cast<int64_t>(rng() % (i + 1))]);
        epoch_pos = perm;
        if (sampler) sampler->mark_seen(epoch_pos);
      }
      if (o.group_by_length) group_by_length(epoch_pos, train_rows, hooks.example_length, o.batch_size, rng);
      loss_sum = 0;
      epoch_elapsed = 0;
      if (hooks.on_epoch_begin) hooks.on_epoch_begin(epoch);
    }
    for (int64_t i = 0; i < n; ++i) order[i] = train_rows[static_cast<size_t>(epoch_pos[i])];

    auto t0 = Clock::now();
    for (int64_t b = first_batch; b < steps_per_epoch; ++b, ++step) {
      const int64_t lo = b * o.batch_size, hi = std::min(n, lo + o.batch_size);
      // This process's rows of the batch: all of them, or this rank's slice [own_lo, own_hi).
      const auto own = dist ? dist->slice(lo, hi) : std::pair<int64_t, int64_t>(lo, hi);
      const int64_t own_lo = own.first, own_hi = own.second;
      const double share = static_cast<double>(own_hi - own_lo) / static_cast<double>(hi - lo);
      std::vector<int64_t> idx(order.begin() + own_lo, order.begin() + own_hi);
      const double lr = lr_at(o, step, total_steps, warmup);
      for (auto& g : opt->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      if (hooks.on_step_begin)
        hooks.on_step_begin(static_cast<double>(epoch - 1) +
                            static_cast<double>(b) / static_cast<double>(steps_per_epoch));
      opt->zero_grad();
      if (dist) dist->sync_buffers(model);
      Batch batch;
      torch::Tensor task_loss, loss;
      double loss_value = 0, task_value = 0;
      std::vector<double> losses, costs;  // the sampler's values of the batch's examples
      if (!idx.empty()) {
        batch = hooks.make_batch(idx);
        auto pred = model.forward(batch);
        task_loss = hooks.loss(pred, batch);
        loss = hooks.objective ? hooks.objective(task_loss, batch) : task_loss;
        loss_value = loss.item<double>();
        task_value = task_loss.item<double>();
        if (sampler && std::isfinite(loss_value)) {
          auto per = hooks.per_example_loss(pred.detach(), batch).to(torch::kDouble).contiguous();
          TORCH_CHECK(per.dim() == 1 && per.size(0) == own_hi - own_lo, "per_example_loss must return (B,) = (",
                      own_hi - own_lo, "), got ", per.sizes());
          losses.assign(per.data_ptr<double>(), per.data_ptr<double>() + per.size(0));
          if (hooks.batch_cost) costs = hooks.batch_cost(batch);
        }
      }
      if (dist) {  // the batch's loss, task loss and sampler values, the same on every rank
        std::vector<double> v(static_cast<size_t>(3 + (sampler ? 2 * (hi - lo) : 0)), 0.0);
        v[0] = std::isfinite(loss_value) ? share * loss_value : 0.0;
        v[1] = std::isfinite(loss_value) ? share * task_value : 0.0;
        v[2] = std::isfinite(loss_value) ? 0.0 : 1.0;
        const size_t at = static_cast<size_t>(own_lo - lo), width = static_cast<size_t>(hi - lo);
        for (size_t i = 0; i < losses.size(); ++i) v[3 + at + i] = losses[i];
        for (size_t i = 0; i < costs.size(); ++i) v[3 + width + at + i] = costs[i];
        dist->allreduce_sum(v, "combining the batch's loss");
        loss_value = v[2] > 0 ? std::nan("") : v[0];
        task_value = v[1];
        if (sampler) {
          losses.assign(v.begin() + 3, v.begin() + 3 + static_cast<int64_t>(width));
          if (hooks.batch_cost) costs.assign(v.begin() + 3 + static_cast<int64_t>(width), v.end());
        }
      }
      if (!std::isfinite(loss_value)) {
        non_finite(fmt::format("the loss is {}", loss_value), epoch, b);
        continue;  // skipped: no backward, no update
      }
      if (sampler) {
        const std::vector<int64_t> positions(epoch_pos.begin() + lo, epoch_pos.begin() + hi);
        sampler->observe(positions, losses);
        if (hooks.batch_cost) sampler->observe_cost(positions, costs);
      }
      if (dist) dist->begin_backward(share);
      if (loss.defined()) loss.backward();
      if (dist) dist->finish_backward();
      if (!gradients_finite(model)) {
        opt->zero_grad();
        non_finite("a gradient is not finite", epoch, b);
        continue;
      }
      if (hooks.after_backward) hooks.after_backward(epoch);
      if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model.parameters(), o.grad_clip);
      opt->step();
      loss_sum += task_value * static_cast<double>(hi - lo);
      const double el = seconds_since(t0);
      const double rate = static_cast<double>(hi - first_batch * o.batch_size) / std::max(el, 1e-9);
      const double remaining = static_cast<double>((o.epochs - epoch) * n + (n - hi)) / std::max(rate, 1e-9);
      progress.update(epoch, o.epochs, b + 1, steps_per_epoch, loss_sum / static_cast<double>(hi), rate, remaining);
      log_loss_sum += task_value * static_cast<double>(hi - lo);
      log_examples += hi - lo;
      if (o.log_every > 0 && (step + 1) % o.log_every == 0 && b + 1 < steps_per_epoch) {
        // Validation inside the epoch: the loss, and the compute objective's report (realised FLOPs of a validation
        // batch, λ, τ, routing); evaluation draws no random numbers, so training goes on as without it.
        const double vl = val_loss_of();
        nlohmann::json line = {{"step", step + 1},
                               {"epoch", epoch},
                               {"position", static_cast<double>(epoch - 1) +
                                                static_cast<double>(b + 1) / static_cast<double>(steps_per_epoch)},
                               {"train_loss", log_loss_sum / static_cast<double>(std::max<int64_t>(1, log_examples))},
                               {"val_loss", vl},
                               {"lr", lr},
                               {"examples_per_second",
                                static_cast<double>(log_examples) / std::max(seconds_since(log_t0), 1e-9)}};
        if (hooks.describe_val) line.update(hooks.describe_val(vl));
        if (hooks.epoch_report) line.update(hooks.epoch_report());
        if (steps_log.is_open()) append_line(steps_log, o.steps_path, line, steps_bytes);
        if (!o.quiet) {
          progress.finish();
          std::string extra;
          if (line.contains("val_relative_flops"))
            extra = fmt::format("  lambda {:.3g}  FLOPs {:.3f} of dense", line["lambda"].get<double>(),
                                line["val_relative_flops"].get<double>());
          std::cerr << fmt::format("  step {}/{}  train loss {:.4f}  val loss {:.4f}{}\n", step + 1, total_steps,
                                   line["train_loss"].get<double>(), vl, extra);
        }
        log_loss_sum = 0;
        log_examples = 0;
        log_t0 = Clock::now();
      }
      if (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0 && b + 1 < steps_per_epoch)
        write_checkpoint(epoch, b + 1, step + 1, epoch_elapsed + seconds_since(t0), false);
    }
    const double secs = epoch_elapsed + seconds_since(t0);
    train_seconds += secs;
    examples_seen += n;
    r.epoch_seconds.push_back(secs);
    r.epochs_run = epoch;
    if (hooks.on_epoch_end && hooks.on_epoch_end(epoch)) {
      // Parameters were replaced (pruning): new optimiser state, and earlier snapshots no longer fit the shapes.
      opt = make_optimizer();
      if (dist) dist->attach(model);
      best = snapshot(model);
      r.best_val_loss = std::numeric_limits<double>::infinity();
      r.best_epoch = 0;
      since_best = 0;
    }

    const double vl = val_loss_of();
    const bool selectable = epoch >= hooks.first_selectable_epoch;
    // NaN (no validation rows) counts as improved; the first selectable epoch always replaces earlier ones.
    const bool improved =
        selectable && (epoch == hooks.first_selectable_epoch || r.best_epoch == 0 || !(vl >= r.best_val_loss));
    if (improved) {
      r.best_val_loss = vl;
      r.best_epoch = epoch;
      best = snapshot(model);
      since_best = 0;
    } else if (selectable) {
      ++since_best;
    }
    if (metrics.is_open()) {
      nlohmann::json line = {{"epoch", epoch},
                             {"train_loss", loss_sum / static_cast<double>(n)},
                             {"val_loss", vl},
                             {"lr", lr_at(o, step - 1, total_steps, warmup)},
                             {"epoch_seconds", secs},
                             {"examples_per_second", static_cast<double>(n) / secs},
                             {"best", improved}};
      if (o.nan_policy == "skip") line["nan_skipped_steps"] = r.nan_skipped_steps;
      if (hooks.describe_val) line.update(hooks.describe_val(vl));
      if (hooks.epoch_report) line.update(hooks.epoch_report());
      if (sampler) line.update(sampler->epoch_stats(sampled));
      append_line(metrics, o.metrics_path, line, metrics_bytes);
    }
    const bool stop = o.patience > 0 && since_best >= o.patience;
    finished = stop || epoch == o.epochs;
    write_checkpoint(epoch + 1, 0, step, 0.0, finished);
  }
  progress.finish();
  restore(model, best);
  model.eval();
  r.examples_per_second = static_cast<double>(examples_seen) / std::max(train_seconds, 1e-9);
  return r;
}

// A NaN or inf anywhere makes the sum of the gradients' sums non-finite.
bool gradients_finite(const Model& model) {
  torch::NoGradGuard g;
  std::vector<torch::Tensor> sums;
  for (const auto& p : model.parameters())
    if (p.grad().defined()) sums.push_back(p.grad().sum().to(torch::kFloat64));
  return sums.empty() || std::isfinite(torch::stack(sums).sum().item<double>());
}

void save_model(const Model& model, const std::string& path) {
  torch::serialize::OutputArchive ar;
  model.save(ar);
  write_file_atomic(path, [&](const std::string& tmp) { ar.save_to(tmp); });
}

void load_model(Model& model, const std::string& path) {
  // Loading replaces each tensor by the stored one whatever its shape or type; the model's own must stay.
  struct Shape {
    std::string name;
    std::vector<int64_t> sizes;
    torch::ScalarType type;
  };
  std::vector<Shape> before;
  for (const auto& p : model.named_parameters()) before.push_back({p.key(), p.value().sizes().vec(), p.value().scalar_type()});
  for (const auto& b : model.named_buffers()) before.push_back({b.key(), b.value().sizes().vec(), b.value().scalar_type()});
  torch::serialize::InputArchive ar;
  try {
    load_archive(ar, path);
    model.load(ar);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load checkpoint " + path + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {  // torch's reader also throws others, e.g. torch::jit::ErrorReport
    throw std::runtime_error("cannot load checkpoint " + path + ": " + e.what());
  }
  const auto params = model.named_parameters();
  const auto buffers = model.named_buffers();
  for (const Shape& s : before) {
    const torch::Tensor* t = params.find(s.name);
    if (t == nullptr) t = buffers.find(s.name);
    if (t == nullptr || t->sizes() != c10::IntArrayRef(s.sizes) || t->scalar_type() != s.type)
      throw std::runtime_error(fmt::format("cannot load checkpoint {}: '{}' is {} {} there, the model has {} {}", path,
                                           s.name, t ? c10::toString(t->scalar_type()) : "missing",
                                           t ? c10::str(t->sizes()) : "", c10::toString(s.type),
                                           c10::str(c10::IntArrayRef(s.sizes))));
  }
}

}  // namespace cerebra
