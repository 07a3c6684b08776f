// Data-parallel training on c10d/Gloo: ranks reproduce one process with the same global batch, a dead rank stops
// the others in bounded time, distributed runs resume, bad launch input is named; sharded sweeps cover every run
// once and merge into the unsharded table.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "cerebra/cli/launch.h"
#include "cerebra/core/config.h"
#include "cerebra/core/io.h"
#include "cerebra/exp/experiments.h"
#include "cerebra/train/distributed.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace cerebra;
using Clock = std::chrono::steady_clock;
using nlohmann::json;
using Span = std::pair<int64_t, int64_t>;

namespace {

// ---- the `cerebra` binary as a child process

struct Child {
  pid_t pid = -1;
  Clock::time_point started;
  bool reaped = false;
  int status = 0;
};

// Starts `cerebra args...` with stdout and stderr appended to `log`.
Child spawn(const std::vector<std::string>& args, const fs::path& log) {
  Child c;
  c.started = Clock::now();
  c.pid = test::spawn_cerebra(args, log);
  return c;
}

// Polls for the child's exit; true when it exited within `seconds` (status in c.status), else kills it.
bool wait_exit(Child& c, double seconds) {
  while (!c.reaped) {
    if (::waitpid(c.pid, &c.status, WNOHANG) == c.pid) {
      c.reaped = true;
      break;
    }
    if (std::chrono::duration<double>(Clock::now() - c.started).count() > seconds) {
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, &c.status, 0);
      c.reaped = true;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int exit_code(const Child& c) { return WIFEXITED(c.status) ? WEXITSTATUS(c.status) : 128 + WTERMSIG(c.status); }

std::vector<std::string> train_args(const Config& c, const fs::path& out, std::vector<std::string> extra) {
  std::vector<std::string> a = {"train", "-q", "--out", out.string()};
  const auto ca = test::config_args(c);
  a.insert(a.end(), ca.begin(), ca.end());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// The children of a process and the RANK in a process's environment (-1 when unreadable).
std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t p; in >> p;) out.push_back(p);
  return out;
}
int rank_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  for (std::string e; std::getline(in, e, '\0');)
    if (e.rfind("RANK=", 0) == 0) return std::stoi(e.substr(5));
  return -1;
}

bool wait_for_file(const Child& c, const fs::path& file, double seconds) {
  while (std::chrono::duration<double>(Clock::now() - c.started).count() < seconds) {
    if (fs::exists(file)) return true;
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(c.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == c.pid)
      return false;  // exited (left to be reaped by wait_exit)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

// Every parameter of two runs' final models within `tol` (0: bit for bit). With tol > 0 the key third of an
// attention's qkv bias is left out: softmax does not change when a constant is added to every score of a query, so
// its gradient is zero in exact arithmetic and AdamW turns the rounding noise of either run into steps of size lr;
// it has no effect on any output (the runs' test metrics are compared as well).
void expect_same_weights(const fs::path& a, const fs::path& b, double tol) {
  LoadedRun ra = load_run(a.string(), 1), rb = load_run(b.string(), 1);
  auto pa = ra.model->named_parameters(), pb = rb.model->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) {
    const torch::Tensor* q = pb.find(p.key());
    ASSERT_NE(q, nullptr) << p.key();
    ASSERT_EQ(p.value().sizes(), q->sizes()) << p.key();
    if (tol == 0) {
      EXPECT_TRUE(torch::equal(p.value(), *q)) << p.key() << " differs";
      continue;
    }
    torch::Tensor x = p.value(), y = *q;
    const std::string& key = p.key();
    if (key.size() >= 8 && key.compare(key.size() - 8, 8, "qkv.bias") == 0) {
      const int64_t d = x.size(0) / 3;
      x = torch::cat({x.narrow(0, 0, d), x.narrow(0, 2 * d, d)});
      y = torch::cat({y.narrow(0, 0, d), y.narrow(0, 2 * d, d)});
    }
    EXPECT_TRUE(torch::allclose(x, y, tol, tol)) << key << " differs by " << (x - y).abs().max().item<double>();
  }
  if (tol > 0) {
    const json ma = read_json_file(a / "summary.json")["metrics"], mb = read_json_file(b / "summary.json")["metrics"];
    for (const auto& [k, v] : ma.items())
      if (v.is_number()) EXPECT_NEAR(v.get<double>(), mb[k].get<double>(), 1e-4 * (1 + std::abs(v.get<double>()))) << k;
  }
}

std::vector<json> metric_lines(const fs::path& dir) {
  std::vector<json> lines;
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string l; std::getline(in, l);) lines.push_back(json::parse(l));
  return lines;
}

Config tabular_config() {
  Config c = test::fixture_config("transformer");
  c.set("epochs", "2", "test");
  c.set("batch_size", "64", "test");
  c.set("dropout", "0", "test");
  return c;
}

// A small synthetic sequence task (MQAR) with a step budget; batch_size 7 splits unevenly over 2 ranks (4 + 3).
Config sequence_config() {
  Config c;
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"task", "mqar"}, {"model", "transformer"}, {"threads", "1"}, {"d_model", "16"}, {"n_heads", "2"},
           {"n_layers", "1"}, {"dropout", "0"}, {"seq_len", "32"}, {"vocab_size", "32"}, {"n_pairs", "4"},
           {"val_examples", "16"}, {"test_examples", "16"}, {"batch_size", "7"}, {"eval_batch_size", "16"},
           {"steps", "12"}, {"patience", "0"}})
    c.set(k, v, "test");
  return c;
}

// Trains `c` in this process and with `cerebra train --nproc 2`; the weights agree to float tolerance.
void expect_two_ranks_match_one(const Config& c, const std::string& name) {
  const fs::path dir = test::temp_dir("dist_" + name);
  const fs::path one = dir / "one", two = dir / "two";
  RunOptions ro;
  ro.quiet = true;
  train_run(parse_run_spec(c), one.string(), ro);
  Child ch = spawn(train_args(c, two, {"--nproc", "2"}), dir / "log");
  ASSERT_TRUE(wait_exit(ch, 120)) << test::read_log(dir / "log");
  ASSERT_EQ(exit_code(ch), 0) << test::read_log(dir / "log");
  expect_same_weights(one, two, 2e-5);
  const auto a = metric_lines(one), b = metric_lines(two);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i]["train_loss"].get<double>(), b[i]["train_loss"].get<double>(), 1e-5) << "epoch " << i + 1;
    EXPECT_NEAR(a[i]["val_loss"].get<double>(), b[i]["val_loss"].get<double>(), 1e-5) << "epoch " << i + 1;
    EXPECT_EQ(a[i]["best"], b[i]["best"]);
  }
  const json s = read_json_file(two / "summary.json");
  EXPECT_EQ(s["training"]["distributed"]["world_size"], 2);
  EXPECT_GT(s["training"]["distributed"]["steps"].get<int64_t>(), 0);
  fs::remove_all(dir);
}

}  // namespace

// ---- how a batch is split

TEST(DistributedSlices, ContiguousInRankOrderCoveringTheBatch) {
  // 7 rows over 2 ranks: 4 + 3; over 3 ranks: 3 + 2 + 2; 1 row over 2 ranks: 1 + 0.
  EXPECT_EQ(Distributed::slice_of(10, 17, 0, 2), Span(10, 14));
  EXPECT_EQ(Distributed::slice_of(10, 17, 1, 2), Span(14, 17));
  EXPECT_EQ(Distributed::slice_of(0, 7, 0, 3), Span(0, 3));
  EXPECT_EQ(Distributed::slice_of(0, 7, 2, 3), Span(5, 7));
  EXPECT_EQ(Distributed::slice_of(5, 6, 1, 2), Span(6, 6));
}

// ---- bad launch input is named

TEST(DistributedLaunch, BadInputIsNamed) {
  LaunchArgs a;
  a.nproc = 0;
  EXPECT_NE(test::error_of([&] { resolve_launch(a); }).find("--nproc must be at least 1, got 0"), std::string::npos);
  a.nproc = 2;
  a.rank = 1;
  EXPECT_NE(test::error_of([&] { resolve_launch(a); }).find("do not combine"), std::string::npos);

  ::unsetenv("MASTER_ADDR");
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "1", 1);
  ::setenv("MASTER_PORT", "29500", 1);
  LaunchArgs env_only;
  EXPECT_NE(test::error_of([&] { resolve_launch(env_only); }).find("MASTER_ADDR"), std::string::npos);
  ::setenv("RANK", "2", 1);
  EXPECT_NE(test::error_of([&] { resolve_launch(env_only); }).find("rank 2 is outside a world of 2"),
            std::string::npos);
  ::setenv("RANK", "x", 1);
  EXPECT_NE(test::error_of([&] { resolve_launch(env_only); }).find("RANK='x'"), std::string::npos);
  ::unsetenv("RANK");
  EXPECT_NE(test::error_of([&] { resolve_launch(env_only); }).find("needs this process's rank"), std::string::npos);
  ::setenv("RANK", "1", 1);
  ::setenv("MASTER_ADDR", "10.0.0.1", 1);
  const Launch l = resolve_launch(env_only);
  EXPECT_EQ(l.kind, Launch::Kind::kRank);
  EXPECT_EQ(l.dist.rank, 1);
  EXPECT_EQ(l.dist.world_size, 2);
  EXPECT_EQ(l.dist.master_addr, "10.0.0.1");
  for (const char* v : {"MASTER_ADDR", "WORLD_SIZE", "RANK", "MASTER_PORT"}) ::unsetenv(v);

  EXPECT_NE(test::error_of([] { exp::parse_shard("3/2"); }).find("index must be in 0..1"), std::string::npos);
  EXPECT_NE(test::error_of([] { exp::parse_shard("1"); }).find("expected i/N"), std::string::npos);
  EXPECT_NE(test::error_of([] { exp::parse_shard("a/2"); }).find("whole numbers"), std::string::npos);
  EXPECT_NE(test::error_of([] { exp::parse_shard("0/0"); }).find("at least 1"), std::string::npos);
  EXPECT_EQ(exp::parse_shard("2/3"), Span(2, 3));

  // On the command line: a clear message and exit code 2, before any work.
  const fs::path dir = test::temp_dir("dist_badinput");
  Child ch = spawn(train_args(tabular_config(), dir / "run", {"--nproc", "0"}), dir / "log");
  ASSERT_TRUE(wait_exit(ch, 60));
  EXPECT_EQ(exit_code(ch), 2);
  const std::string log = test::read_log(dir / "log");
  EXPECT_NE(log.find("--nproc must be at least 1, got 0"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir / "run" / "config.yaml"));
  fs::remove_all(dir);
}

// ---- 2 ranks x batch b = 1 process x batch 2b (batch_size is the global batch: --nproc 2 --batch_size 2b)

TEST(Distributed, TwoRanksMatchOneProcessTabular) {
  Config c = tabular_config();
  // The compute-aware sampler from epoch 2: its draws depend on every example's loss, combined over ranks.
  c.set("sampler", "compute_aware", "test");
  c.set("sampler_start_epoch", "2", "test");
  expect_two_ranks_match_one(c, "tabular");
}

TEST(Distributed, TwoRanksMatchOneProcessSequence) { expect_two_ranks_match_one(sequence_config(), "sequence"); }

// ---- a dead rank stops the others; the run resumes from rank 0's checkpoint

TEST(Distributed, KilledRankStopsTheOtherAndTheRunResumes) {
  const fs::path dir = test::temp_dir("dist_kill");
  Config c = tabular_config();
  c.set("epochs", "6", "test");
  c.set("batch_size", "16", "test");
  c.set("checkpoint_every", "2", "test");
  const fs::path run = dir / "run", ref = dir / "ref";
  Child ch = spawn(train_args(c, run, {"--nproc", "2", "--dist_timeout", "20"}), dir / "log");
  ASSERT_TRUE(wait_for_file(ch, run / "resume.pt", 60)) << test::read_log(dir / "log");
  pid_t victim = -1;
  for (pid_t p : children_of(ch.pid))
    if (rank_of(p) == 1) victim = p;
  ASSERT_GT(victim, 0) << "rank 1 not found among the launcher's children";
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const auto t0 = Clock::now();
  ASSERT_TRUE(wait_exit(ch, 60)) << "the launcher did not stop";
  const double stop_s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(stop_s, 15.0);
  EXPECT_NE(exit_code(ch), 0);
  const std::string log = test::read_log(dir / "log");
  EXPECT_NE(log.find("rank 1 was killed by signal 9"), std::string::npos) << log;
  if (fs::exists(run / "summary.json")) GTEST_SKIP() << "the run finished before rank 1 was killed";

  // --resume with 2 ranks continues from rank 0's checkpoint and ends as a run never stopped.
  Child resumed = spawn(train_args(c, run, {"--nproc", "2", "--resume"}), dir / "log_resume");
  Child uninterrupted = spawn(train_args(c, ref, {"--nproc", "2"}), dir / "log_ref");
  ASSERT_TRUE(wait_exit(resumed, 120));
  ASSERT_TRUE(wait_exit(uninterrupted, 120));
  ASSERT_EQ(exit_code(resumed), 0) << test::read_log(dir / "log_resume");
  ASSERT_EQ(exit_code(uninterrupted), 0) << test::read_log(dir / "log_ref");
  expect_same_weights(run, ref, 0);
  EXPECT_EQ(read_json_file(run / "summary.json")["training"]["resumes"], 1);
  fs::remove_all(dir);
}

// Without a launcher (ranks started apart, as on several machines): the survivor's collective fails and it stops
// with an error naming the operation, well within the timeout.
TEST(Distributed, DeadRankFailsTheOtherWithoutALauncher) {
  const fs::path dir = test::temp_dir("dist_nolauncher");
  Config c = tabular_config();
  c.set("epochs", "30", "test");
  c.set("batch_size", "16", "test");
  c.set("checkpoint_every", "2", "test");
  const std::string port = std::to_string(free_port());
  auto rank_args = [&](int r) {
    return train_args(c, dir / "run", {"--rank", std::to_string(r), "--world_size", "2", "--master_addr",
                                       "127.0.0.1", "--master_port", port, "--dist_timeout", "20"});
  };
  Child r0 = spawn(rank_args(0), dir / "log0");
  Child r1 = spawn(rank_args(1), dir / "log1");
  ASSERT_TRUE(wait_for_file(r0, dir / "run" / "resume.pt", 60))
      << test::read_log(dir / "log0") << test::read_log(dir / "log1");
  ::kill(r1.pid, SIGKILL);
  wait_exit(r1, 10);
  const auto t0 = Clock::now();
  ASSERT_TRUE(wait_exit(r0, 60)) << "rank 0 hung after rank 1 died";
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 25.0);
  EXPECT_EQ(exit_code(r0), 1);
  const std::string log = test::read_log(dir / "log0");
  EXPECT_NE(log.find("distributed:"), std::string::npos) << log;
  EXPECT_NE(log.find("rank 0 of 2"), std::string::npos) << log;
  fs::remove_all(dir);
}

// ---- sharded sweeps

namespace {

// A deterministic stand-in for a run: its summary is a function of its config.
json fake_run(const Config& c, const std::string& dir) {
  const json j = c.to_json();
  const double lambda = j["lambda"].get<double>(), seed = j["seed"].get<double>();
  write_text_file(fs::path(dir) / "config.yaml", c.to_yaml());
  json s = {{"model", "fake"},
            {"params", 100},
            {"metrics", {{"test_rmse", 1.0 + lambda * 10 + seed / 100.0}}},
            {"flops", {{"realised_per_example", 1000.0 / (1 + lambda)}, {"dense_transformer_per_example", 2000.0}}},
            {"time", {{"epoch_seconds_median", 1.0 + seed}, {"train_seconds_total", 3.0}}},
            {"memory", {{"peak_tensor_bytes", 4096}, {"peak_rss_bytes", 8192}}},
            {"threads", 1},
            {"machine", "test machine"},
            {"blas", "libopenblas"},
            {"torch_version", "1.13"}};
  write_text_file_atomic(fs::path(dir) / "summary.json", s.dump(2));
  return s;
}

}  // namespace

TEST(DistributedSweep, ShardsCoverEveryRunOnceAndMergeIntoTheUnshardedTable) {
  const fs::path dir = test::temp_dir("dist_shards");
  Config base = test::fixture_config("mlp");
  const auto points = exp::grid_points(base, {exp::parse_grid("lambda=0,0.1,0.2"), exp::parse_grid("lr=1e-3,1e-2")});
  auto options = [&](const fs::path& out, std::vector<std::string>* ran) {
    exp::SweepOptions o;
    o.out = out.string();
    o.seeds = 2;
    o.quiet = true;
    o.plots = false;
    o.title = "sweep";
    o.run = [ran](const Config& c, const std::string& d, const RunOptions&) {
      ran->push_back(fs::path(d).filename().string());
      return fake_run(c, d);
    };
    return o;
  };
  std::vector<std::string> all;
  exp::run_sweep(points, options(dir / "whole", &all));
  ASSERT_EQ(all.size(), 12u);

  std::multiset<std::string> covered;
  for (int64_t i = 0; i < 3; ++i) {
    std::vector<std::string> ran;
    auto o = options(dir / "sharded" / exp::shard_dir_name(i, 3), &ran);
    o.shard_index = i;
    o.shard_count = 3;
    const auto outcome = exp::run_sweep(points, o);
    EXPECT_EQ(outcome.total, 4);
    EXPECT_EQ(ran.size(), 4u) << "shard " << i;
    covered.insert(ran.begin(), ran.end());
  }
  EXPECT_EQ(covered, std::multiset<std::string>(all.begin(), all.end()));  // every run once

  // Before the merge, each shard is a sweep of its own runs; the report merges them into one plan.
  exp::write_report((dir / "sharded").string(), false);
  exp::write_report((dir / "whole").string(), false);
  const json merged = read_json_file(dir / "sharded" / "sweep.json");
  EXPECT_EQ(merged["runs"].size(), 12u);
  EXPECT_EQ(merged["merged_shards"]["directories"].size(), 3u);
  for (const char* file : {"table.csv", "table.json", "frontier.csv"})
    EXPECT_EQ(read_text_file(dir / "sharded" / file), read_text_file(dir / "whole" / file)) << file;
  const std::string md = read_text_file(dir / "sharded" / "report.md");
  EXPECT_NE(md.find("12 ok, 0 failed, 0 missing"), std::string::npos) << md;
  EXPECT_NE(md.find("3 of 3 shards merged"), std::string::npos) << md;

  // A missing shard leaves its runs missing; a shard of another sweep is refused.
  fs::rename(dir / "sharded" / "shard-2-of-3", dir / "shard-2-of-3.away");
  exp::write_report((dir / "sharded").string(), false);
  EXPECT_NE(read_text_file(dir / "sharded" / "report.md").find("8 ok, 0 failed, 4 missing"), std::string::npos);
  std::vector<std::string> other_ran;
  auto other = options(dir / "sharded" / exp::shard_dir_name(2, 3), &other_ran);
  other.shard_index = 2;
  other.shard_count = 3;
  other.seeds = 1;
  exp::run_sweep(points, other);
  EXPECT_NE(test::error_of([&] { exp::write_report((dir / "sharded").string(), false); }).find("another sweep"),
            std::string::npos);
  fs::remove_all(dir);
}
