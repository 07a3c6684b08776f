// Nothing lost: runs killed with SIGKILL and resumed end bit-identical to runs never stopped; the NaN guard; run
// directories of another config or of a finished run; checks made before any work.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/core/io.h"
#include "cerebra/core/state_archive.h"
#include "cerebra/exp/experiments.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace cerebra;
using Clock = std::chrono::steady_clock;

namespace {

// ---- the `cerebra` binary as a child process

struct Child {
  pid_t pid = -1;
  Clock::time_point started;
};

// Starts `cerebra args...` with stdout and stderr appended to `log`.
Child spawn(const std::vector<std::string>& args, const fs::path& log) {
  Child c;
  c.started = Clock::now();
  c.pid = test::spawn_cerebra(args, log);
  return c;
}

int wait_status(const Child& c) {
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  return status;
}

// Waits until `log` holds `needle` beyond `from`; false when the child exited first (it is then reaped: do not
// wait for it again).
bool wait_for_text(const Child& c, const fs::path& log, const std::string& needle, size_t from) {
  for (;;) {
    const std::string text = test::read_log(log);
    if (text.size() > from && text.find(needle, from) != std::string::npos) return true;
    int status = 0;
    if (::waitpid(c.pid, &status, WNOHANG) == c.pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// metrics.jsonl (or another log of JSON lines) without the wall-clock fields.
std::vector<nlohmann::json> metric_lines(const fs::path& dir, const std::string& file = "metrics.jsonl") {
  std::vector<nlohmann::json> lines;
  std::ifstream in(dir / file);
  for (std::string l; std::getline(in, l);) {
    auto j = nlohmann::json::parse(l);
    j.erase("epoch_seconds");
    j.erase("examples_per_second");
    lines.push_back(j);
  }
  return lines;
}

// Every parameter and buffer of the two runs' final models, bit for bit.
void expect_same_weights(const fs::path& a, const fs::path& b) {
  LoadedRun ra = load_run(a.string(), 1), rb = load_run(b.string(), 1);
  auto pa = ra.model->named_parameters(), pb = rb.model->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) {
    const torch::Tensor* q = pb.find(p.key());
    ASSERT_NE(q, nullptr) << p.key();
    ASSERT_EQ(p.value().sizes(), q->sizes()) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), *q)) << p.key() << " differs";
  }
  auto ba = ra.model->named_buffers(), bb = rb.model->named_buffers();
  ASSERT_EQ(ba.size(), bb.size());
  for (const auto& p : ba) {
    const torch::Tensor* q = bb.find(p.key());
    ASSERT_NE(q, nullptr) << p.key();
    // NaN marks an unobserved quantisation range: equal where both are NaN.
    EXPECT_TRUE(torch::equal(p.value().isnan(), q->isnan()) &&
                torch::equal(p.value().nan_to_num(0), q->nan_to_num(0)))
        << p.key() << " differs";
  }
}

// Trains `config` once without interruption, then again in another directory killed with SIGKILL at three random
// moments during training and resumed each time (`cerebra train --resume`), and compares the two runs.
void kill_and_resume(const Config& config, const std::string& name) {
  const fs::path root = test::temp_dir("resume_" + name);
  const std::vector<std::string> args = test::config_args(config);
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"train"};  // not --quiet: the log says where each attempt resumed
    a.insert(a.end(), args.begin(), args.end());
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  // The header line is printed once the model is built, just before training starts (or resumes).
  const std::string kTrainingStarts = "[" + config.get_string("model") + "]";

  // Uninterrupted, timing the training part.
  const fs::path whole = root / "whole", whole_log = root / "whole.log";
  Child c = spawn(with({"--out", whole.string()}), whole_log);
  ASSERT_TRUE(wait_for_text(c, whole_log, kTrainingStarts, 0)) << test::read_log(whole_log);
  const auto t_train = Clock::now();
  ASSERT_EQ(wait_status(c), 0) << test::read_log(whole_log);
  const double train_s = std::chrono::duration<double>(Clock::now() - t_train).count();

  std::random_device rd;
  const unsigned seed = rd();
  std::mt19937 rng(seed);
  const fs::path cut = root / "cut", cut_log = root / "cut.log";
  // Each attempt trains at most 30% of the run before its kill, so three kills land before the end; should a
  // loaded machine let an attempt finish anyway, the whole sequence starts again with shorter delays.
  int kills = 0;
  std::vector<double> moments;
  for (int attempt = 0; attempt < 4 && kills < 3; ++attempt) {
    fs::remove_all(cut);
    fs::remove(cut_log);
    kills = 0;
    moments.clear();
    std::uniform_real_distribution<double> delay(0.05 * train_s / (1 << attempt), 0.3 * train_s / (1 << attempt));
    for (int k = 0; k < 3; ++k) {
      const size_t from = test::read_log(cut_log).size();
      Child r = spawn(with({"--out", cut.string(), "--resume"}), cut_log);
      if (!wait_for_text(r, cut_log, kTrainingStarts, from)) break;  // it exited before training: an error
      const double d = delay(rng);
      std::this_thread::sleep_for(std::chrono::duration<double>(d));
      ::kill(r.pid, SIGKILL);
      const int status = wait_status(r);
      if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) break;  // finished before the kill
      ++kills;
      moments.push_back(d);
    }
  }
  std::string when;
  for (double m : moments) when += " " + std::to_string(m) + " s";
  SCOPED_TRACE("random seed " + std::to_string(seed) + "; killed after training for" + when + " (whole training " +
               std::to_string(train_s) + " s)");
  ASSERT_EQ(kills, 3) << test::read_log(cut_log);
  EXPECT_FALSE(fs::exists(cut / "summary.json"));

  Child last = spawn(with({"--out", cut.string(), "--resume"}), cut_log);
  ASSERT_EQ(wait_status(last), 0) << test::read_log(cut_log);
  const std::string log = test::read_log(cut_log);
  EXPECT_NE(log.find("resuming at epoch"), std::string::npos) << "no attempt resumed from a checkpoint:\n" << log;

  const nlohmann::json a = read_json_file(whole / "summary.json"), b = read_json_file(cut / "summary.json");
  EXPECT_EQ(a["metrics"], b["metrics"]) << a["metrics"].dump() << "\n" << b["metrics"].dump();
  for (const char* k : {"epochs_run", "best_epoch", "best_val_loss", "steps", "pruning"})
    EXPECT_EQ(a["training"].value(k, nlohmann::json()), b["training"].value(k, nlohmann::json())) << k;
  EXPECT_EQ(a["params"], b["params"]);
  EXPECT_EQ(a["flops"]["realised_per_example"], b["flops"]["realised_per_example"]);
  EXPECT_GE(b["training"].value("resumes", 0), 1);
  EXPECT_EQ(metric_lines(whole), metric_lines(cut));
  EXPECT_EQ(metric_lines(whole, "steps.jsonl"), metric_lines(cut, "steps.jsonl"));
  expect_same_weights(whole, cut);
  EXPECT_FALSE(fs::exists(cut / kResumeCheckpointFile)) << "a finished run keeps no resume checkpoint";
  fs::remove_all(root);
}

// A small config on the CPS1988 fixture, single-threaded.
Config tabular_config(const std::string& model) {
  Config c = test::fixture_config(model);
  c.set("threads", "1", "test");
  return c;
}

}  // namespace

// Tabular task, transformer over feature tokens with the whole recipe: compute-aware sampler from epoch 2,
// pruning of heads and feed-forward units at the ends of epochs 3 and 4, QAT from epoch 4; checkpoints every 3
// steps inside epochs as well as at their ends.
TEST(Resume, KilledTabularRunWithSamplerPruningQatEndsBitIdentical) {
  Config c = tabular_config("transformer");
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"epochs", "6"}, {"batch_size", "32"}, {"patience", "0"}, {"checkpoint_every", "3"},
           {"sampler", "compute_aware"}, {"sampler_start_epoch", "2"},
           {"prune_start_epoch", "3"}, {"prune_epochs", "2"}, {"prune_target", "0.5"}, {"prune_kinds", "heads,ffn"},
           {"qat", "true"}, {"qat_start_epoch", "4"}})
    c.set(k, v, "test");
  kill_and_resume(c, "tabular");
}

namespace {

Config sequence_config() {
  Config c;
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"task", "mqar"}, {"model", "cerebra"}, {"threads", "1"}, {"d_model", "16"}, {"n_heads", "2"},
           {"n_layers", "1"}, {"dropout", "0.1"}, {"seq_len", "32"}, {"vocab_size", "32"}, {"n_pairs", "4"},
           {"val_examples", "16"}, {"test_examples", "16"}, {"batch_size", "8"}, {"eval_batch_size", "16"},
           {"steps", "120"}, {"patience", "0"}, {"lambda", "0.01"}, {"gumbel", "true"}, {"checkpoint_every", "4"}})
    c.set(k, v, "test");
  return c;
}

}  // namespace

// Sequence task with a step budget (one epoch of fresh examples): the Cerebra layer (Gumbel-noised routing, the
// compute penalty) with dropout, checkpoints every 4 steps, a validation line in steps.jsonl every 6.
TEST(Resume, KilledSequenceRunEndsBitIdentical) {
  Config c = sequence_config();
  c.set("log_every", "6", "test");
  kill_and_resume(c, "sequence");
}

// Validation inside the epoch (log_every) writes a line every N steps and changes nothing about training: the same
// weights and metrics as without it.
TEST(Resume, StepLogValidatesWithoutChangingTraining) {
  const fs::path root = test::temp_dir("step_log");
  Config c = sequence_config();
  c.set("steps", "40", "test");
  train_run(parse_run_spec(c), (root / "plain").string(), RunOptions{true});
  c.set("log_every", "15", "test");
  train_run(parse_run_spec(c), (root / "logged").string(), RunOptions{true});
  EXPECT_FALSE(fs::exists(root / "plain" / "steps.jsonl"));
  const auto lines = metric_lines(root / "logged", "steps.jsonl");
  ASSERT_EQ(lines.size(), 2u);  // steps 15 and 30; the 40th ends the epoch, whose line is in metrics.jsonl
  EXPECT_EQ(lines[0]["step"], 15);
  EXPECT_EQ(lines[1]["step"], 30);
  for (const auto& l : lines) {
    EXPECT_TRUE(std::isfinite(l["val_loss"].get<double>())) << l.dump();
    EXPECT_TRUE(std::isfinite(l["train_loss"].get<double>())) << l.dump();
    EXPECT_GT(l["val_relative_flops"].get<double>(), 0.0) << l.dump();
  }
  EXPECT_NEAR(lines[1]["position"].get<double>(), 0.75, 1e-12);
  expect_same_weights(root / "plain", root / "logged");
  EXPECT_EQ(read_json_file(root / "plain" / "summary.json")["metrics"],
            read_json_file(root / "logged" / "summary.json")["metrics"]);
  fs::remove_all(root);
}

// ---- the NaN guard: an overflowing learning rate (weights ~1e30 after the first step, so the second step's
// forward overflows)

namespace {

Config overflowing_config() {
  Config c = tabular_config("mlp");
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"lr", "1e30"}, {"lr_schedule", "constant"}, {"warmup_epochs", "0"}, {"checkpoint_every", "1"},
           {"epochs", "2"}, {"batch_size", "64"}})
    c.set(k, v, "test");
  return c;
}

}  // namespace

TEST(Resume, NanStopsTheRunAndKeepsTheLastGoodCheckpoint) {
  const fs::path dir = test::temp_dir("resume_nan");
  const RunSpec spec = parse_run_spec(overflowing_config());
  RunOptions quiet;
  quiet.quiet = true;
  std::string message;
  try {
    train_run(spec, dir.string(), quiet);
  } catch (const TrainingDiverged& e) {
    message = e.what();
  }
  ASSERT_FALSE(message.empty()) << "the run did not stop";
  EXPECT_NE(message.find("epoch 1, step 2 (batch 2 of"), std::string::npos) << message;
  EXPECT_TRUE(message.find("the loss is inf") != std::string::npos ||
              message.find("the loss is nan") != std::string::npos ||
              message.find("the loss is -nan") != std::string::npos) << message;
  EXPECT_NE(message.find("last good checkpoint is epoch 1, step 1"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "summary.json"));

  // The checkpoint is the one of step 1: loads, finite weights.
  ASSERT_TRUE(fs::exists(dir / kResumeCheckpointFile));
  torch::serialize::InputArchive ar;
  ar.load_from((dir / kResumeCheckpointFile).string());
  EXPECT_EQ(read_int(ar, "step"), 1);
  EXPECT_EQ(read_int(ar, "done"), 0);
  torch::serialize::InputArchive weights;
  ar.read("model", weights);
  auto model = make_model(spec.model, make_task(spec.task, dir.string())->info());
  model->load(weights);
  for (const auto& p : model->parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());

  // Resuming it replays the same step 2 and stops the same way.
  RunOptions resume = quiet;
  resume.resume = true;
  std::string again;
  try {
    train_run(spec, dir.string(), resume);
  } catch (const TrainingDiverged& e) {
    again = e.what();
  }
  EXPECT_EQ(again, message);
  fs::remove_all(dir);
}

// The error of an overflowing run under `nan_policy: skip` with the given skip limit.
std::string skip_policy_error(const fs::path& dir, const std::string& limit) {
  Config c = overflowing_config();
  c.set("nan_policy", "skip", "test");
  c.set("nan_skip_limit", limit, "test");
  RunOptions quiet;
  quiet.quiet = true;
  return test::error_of([&] { train_run(parse_run_spec(c), dir.string(), quiet); });
}

TEST(Resume, NanPolicySkipStopsAfterTheLimit) {
  const fs::path dir = test::temp_dir("resume_nan_skip");
  const std::string message = skip_policy_error(dir, "3");
  EXPECT_NE(message.find("at epoch 1, step 5"), std::string::npos) << message;
  EXPECT_NE(message.find("4 steps were skipped"), std::string::npos) << message;
  EXPECT_NE(message.find("nan_skip_limit 3"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "summary.json"));
  fs::remove_all(dir);
}

TEST(Resume, NanPolicySkipWritesNoSummaryWithNonFiniteMetrics) {
  const fs::path dir = test::temp_dir("resume_nan_metrics");
  const std::string message = skip_policy_error(dir, "1000");
  EXPECT_NE(message.find("not finite"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir / "summary.json"));
  fs::remove_all(dir);
}

// ---- run directories of another config, finished runs

TEST(Resume, RefusesAnotherConfigListingTheKeysAndReturnsAFinishedRun) {
  const fs::path dir = test::temp_dir("resume_config");
  Config c = tabular_config("mlp");
  c.set("epochs", "2", "test");
  RunOptions o;
  o.quiet = true;
  const nlohmann::json first = train_run(parse_run_spec(c), dir.string(), o);
  EXPECT_EQ(run_progress(c, dir.string()).state, RunProgress::State::kFinished);
  EXPECT_FALSE(fs::exists(dir / kResumeCheckpointFile));

  o.resume = true;
  const auto mtime = fs::last_write_time(dir / "metrics.jsonl");
  const nlohmann::json again = train_run(parse_run_spec(c), dir.string(), o);  // finished: returned as it is
  EXPECT_EQ(again, first);
  EXPECT_EQ(fs::last_write_time(dir / "metrics.jsonl"), mtime) << "a finished run was trained again";

  Config other = c;
  other.set("lr", "0.01", "test");
  other.set("batch_size", "32", "test");
  const RunProgress p = run_progress(other, dir.string());
  EXPECT_EQ(p.state, RunProgress::State::kOtherConfig);
  std::string message;
  try {
    train_run(parse_run_spec(other), dir.string(), o);
  } catch (const ConfigError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("batch_size: 64 -> 32"), std::string::npos) << message;
  EXPECT_NE(message.find("lr: 1e-3 -> 0.01"), std::string::npos) << message;
  EXPECT_EQ(read_json_file(dir / "summary.json"), first) << "the refused run changed the directory";

  // From the command line without --config: the run's own config.yaml, with the given keys on top.
  const fs::path log = dir / "cli.log";
  Child same = spawn({"train", "--resume", "--out", dir.string(), "--threads", "1"}, log);
  const int same_status = wait_status(same);
  std::string out = test::read_log(log);
  EXPECT_TRUE(WIFEXITED(same_status) && WEXITSTATUS(same_status) == 0) << out;
  EXPECT_NE(out.find("is finished"), std::string::npos) << out;
  fs::remove(log);
  Child changed = spawn({"train", "--resume", "--out", dir.string(), "--lr", "0.01"}, log);
  const int changed_status = wait_status(changed);
  out = test::read_log(log);
  EXPECT_TRUE(WIFEXITED(changed_status) && WEXITSTATUS(changed_status) != 0) << out;
  EXPECT_NE(out.find("lr: 1e-3 -> 0.01"), std::string::npos) << out;
  EXPECT_EQ(out.find("task:"), std::string::npos) << "keys not given on the command line were compared:\n" << out;
  EXPECT_EQ(read_json_file(dir / "summary.json"), first) << "the refused run changed the directory";
  fs::remove_all(dir);
}

// ---- checks before any work: the CLI reports a bad value or an unwritable out directory before it would export
// the data sets (here: a data directory without the CSV, so an export would start)

TEST(Resume, EarlyChecksComeBeforeTheDataExport) {
  const fs::path root = test::temp_dir("resume_early");
  const fs::path empty_data = root / "data";
  fs::create_directories(empty_data);
  std::ofstream(root / "file") << "not a directory\n";
  struct Case {
    std::vector<std::string> args;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"train", "--threads", "-1", "--data_dir", empty_data.string(), "--out", (root / "a").string()},
       "threads must be >= 0"},
      {{"train", "--data_dir", empty_data.string(), "--out", (root / "file" / "run").string()}, "cannot write to"},
      {{"sweep", "--grid", "lr=1e-3", "--data_dir", empty_data.string(), "--out", (root / "file" / "sweep").string()},
       "cannot write to"},
      {{"reproduce", "table1", "--threads", "-1", "--out", (root / "t1").string()}, "threads must be >= 0"},
  };
  for (const auto& k : cases) {
    const fs::path log = root / "log";
    fs::remove(log);
    Child c = spawn(k.args, log);
    const int status = wait_status(c);
    const std::string out = test::read_log(log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << out;
    EXPECT_NE(out.find(k.expected), std::string::npos) << out;
    EXPECT_EQ(out.find("exporting"), std::string::npos) << out;
    EXPECT_EQ(out.find("cerebra data:"), std::string::npos) << out;
  }
  fs::remove_all(root);
}

// ---- sweeps continue unfinished runs of the planned config and start the others afresh

TEST(Resume, SweepContinuesUnfinishedRunsOfThePlannedConfig) {
  const fs::path dir = test::temp_dir("resume_sweep");
  Config base = tabular_config("mlp");
  base.set("epochs", "2", "test");
  const auto points = exp::grid_points(base, {exp::parse_grid("lr=1e-3,1e-2")});
  ASSERT_EQ(points.size(), 2u);
  const int64_t seed = base.get_int("seed");
  // An unfinished run of the planned config, and a run directory of another config.
  Config planned = points[0].config, other = points[1].config;
  planned.set("seed", std::to_string(seed), "test");
  other.set("seed", std::to_string(seed), "test");
  other.set("epochs", "9", "test");
  const fs::path d0 = dir / exp::run_dir_name(points[0], seed), d1 = dir / exp::run_dir_name(points[1], seed);
  fs::create_directories(d0);
  fs::create_directories(d1);
  write_text_file(d0 / "config.yaml", planned.to_yaml());
  write_text_file(d1 / "config.yaml", other.to_yaml());

  exp::SweepOptions o;
  o.out = dir.string();
  o.seeds = 1;
  o.quiet = true;
  o.plots = false;
  std::map<std::string, bool> resumed;
  o.run = [&](const Config& c, const std::string& run_dir, const RunOptions& ro) {
    resumed[fs::path(run_dir).filename().string()] = ro.resume;
    return train_run(parse_run_spec(c), run_dir, ro);
  };
  const auto outcome = exp::run_sweep(points, o);
  EXPECT_EQ(outcome.failed, 0);
  EXPECT_EQ(outcome.ran, 2);
  EXPECT_TRUE(resumed.at(d0.filename().string()));
  EXPECT_FALSE(resumed.at(d1.filename().string()));
  EXPECT_EQ(run_progress(planned, d0.string()).state, RunProgress::State::kFinished);
  Config planned1 = points[1].config;
  planned1.set("seed", std::to_string(seed), "test");
  EXPECT_EQ(run_progress(planned1, d1.string()).state, RunProgress::State::kFinished);
  fs::remove_all(dir);
}
