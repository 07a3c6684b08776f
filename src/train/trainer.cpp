#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <nlohmann/json.hpp>

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
  auto make_optimizer = [&] {
    return std::make_unique<torch::optim::AdamW>(model.parameters(),
                                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  };
  std::unique_ptr<torch::optim::AdamW> opt = make_optimizer();
  const int64_t n = static_cast<int64_t>(train_rows.size());
  const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
  const int64_t total_steps = steps_per_epoch * o.epochs;
  const int64_t warmup = std::max<int64_t>(1, static_cast<int64_t>(std::llround(o.warmup_epochs * steps_per_epoch)));

  std::ofstream metrics;
  if (!o.metrics_path.empty()) {
    metrics.open(o.metrics_path);
    if (!metrics) throw std::runtime_error("cannot write " + o.metrics_path);
  }

  auto val_loss_of = [&]() {
    if (val_rows.empty()) return std::nan("");
    torch::NoGradGuard g;
    model.eval();
    double sum = 0;
    for (size_t i = 0; i < val_rows.size(); i += static_cast<size_t>(o.eval_batch_size)) {
      std::vector<int64_t> idx(val_rows.begin() + i,
                               val_rows.begin() + std::min(val_rows.size(), i + o.eval_batch_size));
      Batch b = hooks.make_batch(idx);
      sum += hooks.loss(model.forward(b), b).item<double>() * static_cast<double>(idx.size());
    }
    model.train();
    return sum / static_cast<double>(val_rows.size());
  };

  TrainResult r;
  r.best_val_loss = std::numeric_limits<double>::infinity();
  std::vector<torch::Tensor> best = snapshot(model);
  std::vector<int64_t> perm(static_cast<size_t>(n)), order(train_rows);  // positions and the rows they stand for
  std::iota(perm.begin(), perm.end(), 0);
  std::unique_ptr<Sampler> sampler;
  if (o.sampler.enabled) {
    TORCH_CHECK(hooks.per_example_loss, "train_model: the compute-aware sampler needs a per-example loss");
    sampler = std::make_unique<Sampler>(n, o.sampler);
  }
  Progress progress(o.quiet);
  int64_t step = 0, since_best = 0;
  double train_seconds = 0;
  int64_t examples_seen = 0;
  model.train();

  for (int64_t epoch = 1; epoch <= o.epochs; ++epoch) {
    // Seeded Fisher-Yates per epoch: the same seed gives the same batches.
    std::mt19937_64 rng(o.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    const bool sampled = sampler && o.sampler.active(epoch);
    std::vector<int64_t> epoch_pos;
    if (sampled) {
      // Compute-aware sampler: N draws with replacement from p ∝ exp(β·ρ̃ − γ·Ĉ), with the uniform floor.
      epoch_pos = sampler->draw(n, rng);
    } else {
      for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[static_cast<int64_t>(rng() % (i + 1))]);
      epoch_pos = perm;
      if (sampler) sampler->mark_seen(epoch_pos);
    }
    for (int64_t i = 0; i < n; ++i) order[i] = train_rows[static_cast<size_t>(epoch_pos[i])];

    if (hooks.on_epoch_begin) hooks.on_epoch_begin(epoch);
    auto t0 = Clock::now();
    double loss_sum = 0;
    for (int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
      const int64_t lo = b * o.batch_size, hi = std::min(n, lo + o.batch_size);
      std::vector<int64_t> idx(order.begin() + lo, order.begin() + hi);
      Batch batch = hooks.make_batch(idx);
      const double lr = lr_at(o, step, total_steps, warmup);
      for (auto& g : opt->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      opt->zero_grad();
      auto pred = model.forward(batch);
      auto task_loss = hooks.loss(pred, batch);
      if (sampler) {
        auto per = hooks.per_example_loss(pred.detach(), batch).to(torch::kDouble).contiguous();
        TORCH_CHECK(per.dim() == 1 && per.size(0) == hi - lo, "per_example_loss must return (B,) = (", hi - lo,
                    "), got ", per.sizes());
        std::vector<double> losses(per.data_ptr<double>(), per.data_ptr<double>() + per.size(0));
        const std::vector<int64_t> positions(epoch_pos.begin() + lo, epoch_pos.begin() + hi);
        sampler->observe(positions, losses);
        if (hooks.batch_cost) sampler->observe_cost(positions, hooks.batch_cost(batch));
      }
      auto loss = hooks.objective ? hooks.objective(task_loss, batch) : task_loss;
      TORCH_CHECK(std::isfinite(loss.item<double>()), "training diverged: loss is ", loss.item<double>(),
                  " at epoch ", epoch, ", batch ", b + 1, " (try a lower lr)");
      loss.backward();
      if (hooks.after_backward) hooks.after_backward(epoch);
      if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model.parameters(), o.grad_clip);
      opt->step();
      loss_sum += task_loss.item<double>() * static_cast<double>(hi - lo);
      const double el = seconds_since(t0);
      const double rate = static_cast<double>(hi) / std::max(el, 1e-9);
      const double remaining = static_cast<double>((o.epochs - epoch) * n + (n - hi)) / std::max(rate, 1e-9);
      progress.update(epoch, o.epochs, b + 1, steps_per_epoch, loss_sum / static_cast<double>(hi), rate, remaining);
    }
    const double secs = seconds_since(t0);
    train_seconds += secs;
    examples_seen += n;
    r.epoch_seconds.push_back(secs);
    r.epochs_run = epoch;
    if (hooks.on_epoch_end && hooks.on_epoch_end(epoch)) {
      // Parameters were replaced (pruning): new optimiser state, and earlier snapshots no longer fit the shapes.
      opt = make_optimizer();
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
      if (hooks.describe_val) line.update(hooks.describe_val(vl));
      if (hooks.epoch_report) line.update(hooks.epoch_report());
      if (sampler) line.update(sampler->epoch_stats(sampled));
      metrics << line.dump() << "\n";
      metrics.flush();
    }
    if (o.patience > 0 && since_best >= o.patience) break;
  }
  progress.finish();
  restore(model, best);
  model.eval();
  r.examples_per_second = static_cast<double>(examples_seen) / std::max(train_seconds, 1e-9);
  return r;
}

void save_model(const Model& model, const std::string& path) {
  torch::serialize::OutputArchive ar;
  model.save(ar);
  ar.save_to(path);
}

void load_model(Model& model, const std::string& path) {
  torch::serialize::InputArchive ar;
  try {
    ar.load_from(path);
    model.load(ar);
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot load checkpoint " + path + ": " + e.what_without_backtrace());
  }
}

}  // namespace cerebra
