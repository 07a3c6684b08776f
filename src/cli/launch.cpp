// Data-parallel launch for `cerebra train` (include/cerebra/cli/launch.h).
#include "cerebra/cli/launch.h"

#include <CLI/CLI.hpp>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include <fmt/core.h>

#include "cerebra/core/config.h"
#include "cerebra/core/runtime.h"

namespace cerebra {

namespace {

// The integer in environment variable `name`, or `fallback` when unset; a malformed value is a ConfigError.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 1 << 30)
    throw ConfigError(fmt::format("environment variable {}='{}' is not a non-negative integer", name, v));
  return static_cast<int>(x);
}

std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// A TCP port free on this machine now (the kernel's choice for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("cannot open a socket to find a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot find a free local port for the rendezvous");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// This process's command line (argv), from /proc/self/cmdline.
std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string a;
  while (std::getline(in, a, '\0')) args.push_back(a);
  return args;
}

// The arguments without the flags that make a process a launcher (the ranks get the environment instead).
std::vector<std::string> rank_arguments(std::vector<std::string> args) {
  static const std::vector<std::string> launch_flags = {"--nproc", "--nnodes", "--node_rank", "--rank",
                                                        "--world_size", "--local_rank", "--local_world_size",
                                                        "--master_addr", "--master_port"};
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    bool skip = false;
    for (const auto& f : launch_flags) {
      if (args[i] == f) {  // "--flag value"
        skip = true;
        ++i;
        break;
      }
      if (args[i].rfind(f + "=", 0) == 0) {  // "--flag=value"
        skip = true;
        break;
      }
    }
    if (!skip) out.push_back(args[i]);
  }
  return out;
}

std::atomic<int> g_forward_signal{0};
void remember_signal(int sig) { g_forward_signal = sig; }

}  // namespace

void add_launch_options(CLI::App* app, LaunchArgs& a) {
  const std::string group = "Data-parallel training (c10d/Gloo)";
  app->add_option("--nproc", a.nproc,
                  "Train data-parallel with N ranks on this machine (child processes of this binary, Gloo over "
                  "loopback). batch_size stays the global batch: each rank trains on batch_size / N rows of every "
                  "batch, so the run matches one process with the same config. Threads per rank default to cores / N")
      ->group(group);
  app->add_option("--nnodes", a.nnodes, "With --nproc: machines taking part (each runs the same command)")->group(group);
  app->add_option("--node_rank", a.node_rank,
                  "With --nproc and --nnodes: this machine's index (0 hosts the rendezvous); its ranks are "
                  "node_rank*nproc ... node_rank*nproc + nproc - 1")
      ->group(group);
  app->add_option("--rank", a.rank, "This process's rank (default: $RANK)")->group(group);
  app->add_option("--world_size", a.world_size, "Ranks in all (default: $WORLD_SIZE; 1 = one process)")->group(group);
  app->add_option("--local_rank", a.local_rank, "Rank on this machine (default: $LOCAL_RANK)")->group(group);
  app->add_option("--local_world_size", a.local_world_size,
                  "Ranks on this machine, for the default threads per rank (default: $LOCAL_WORLD_SIZE, else 1)")
      ->group(group);
  app->add_option("--master_addr", a.master_addr, "Address of rank 0, which hosts the rendezvous (default: "
                                                  "$MASTER_ADDR)")
      ->group(group);
  app->add_option("--master_port", a.master_port, "Port of the rendezvous on rank 0 (default: $MASTER_PORT)")
      ->group(group);
  app->add_option("--dist_timeout", a.timeout_seconds,
                  "Seconds a rank waits for the others (rendezvous and every collective) before it stops with an "
                  "error; a rank that dies closes its connections, which the others notice at once")
      ->capture_default_str()
      ->group(group);
  app->add_option("--bucket_mb", a.bucket_mib, "Gradient bucket size in MiB: gradients are all-reduced a bucket at a "
                                               "time, as backward fills them")
      ->capture_default_str()
      ->group(group);
}

int threads_per_rank(int local_world_size) {
  return std::max(1, available_cores() / std::max(1, local_world_size));
}

Launch resolve_launch(const LaunchArgs& a) {
  if (!(a.timeout_seconds > 0))
    throw ConfigError(fmt::format("--dist_timeout must be positive (seconds), got {}", a.timeout_seconds));
  if (!(a.bucket_mib > 0)) throw ConfigError(fmt::format("--bucket_mb must be positive, got {}", a.bucket_mib));
  if (a.master_port != -1 && (a.master_port < 1 || a.master_port > 65535))
    throw ConfigError(fmt::format("--master_port must be in 1..65535, got {}", a.master_port));
  Launch l;
  l.dist.timeout_seconds = a.timeout_seconds;
  l.dist.bucket_mib = a.bucket_mib;

  if (a.nproc != -1 || a.nnodes != -1 || a.node_rank != -1) {  // a launcher
    if (a.nproc < 1) throw ConfigError(fmt::format("--nproc must be at least 1, got {}", a.nproc));
    if (a.rank != -1 || a.world_size != -1 || a.local_rank != -1 || a.local_world_size != -1)
      throw ConfigError("--nproc starts its ranks itself: do not combine it with --rank, --world_size, --local_rank "
                        "or --local_world_size");
    if (!env_str("RANK").empty())
      throw ConfigError("--nproc was given to a process that already is a rank (RANK is set in its environment)");
    const int nnodes = a.nnodes == -1 ? 1 : a.nnodes;
    if (nnodes < 1) throw ConfigError(fmt::format("--nnodes must be at least 1, got {}", a.nnodes));
    if (nnodes > 1 && a.node_rank == -1) throw ConfigError("--nnodes > 1 needs --node_rank (this machine's index)");
    const int node_rank = a.node_rank == -1 ? 0 : a.node_rank;
    if (node_rank < 0 || node_rank >= nnodes)
      throw ConfigError(fmt::format("--node_rank must be in 0..{} (--nnodes {}), got {}", nnodes - 1, nnodes,
                                    node_rank));
    l.nproc = a.nproc;
    l.dist.world_size = a.nproc * nnodes;
    l.dist.rank = node_rank * a.nproc;
    l.dist.local_world_size = a.nproc;
    if (nnodes > 1) {
      l.dist.master_addr = !a.master_addr.empty() ? a.master_addr : env_str("MASTER_ADDR");
      l.dist.master_port = a.master_port != -1 ? a.master_port : env_int("MASTER_PORT", -1);
      if (l.dist.master_addr.empty())
        throw ConfigError("--nnodes > 1 needs the address of node 0 (--master_addr or MASTER_ADDR)");
      if (l.dist.master_port < 1)
        throw ConfigError("--nnodes > 1 needs the rendezvous port on node 0 (--master_port or MASTER_PORT)");
    } else {
      l.dist.master_addr = !a.master_addr.empty() ? a.master_addr : "127.0.0.1";
      l.dist.master_port = a.master_port != -1 ? a.master_port : 0;  // 0: a free port, found when starting
    }
    l.kind = l.dist.world_size > 1 ? Launch::Kind::kSpawner : Launch::Kind::kSingle;
    return l;
  }

  // One rank of a run started elsewhere (torchrun's environment, a scheduler, or by hand), or one process.
  const int world = a.world_size != -1 ? a.world_size : env_int("WORLD_SIZE", 1);
  if (world < 1) throw ConfigError(fmt::format("the world size must be at least 1, got {}", world));
  if (world == 1) {
    if (a.rank > 0 || env_int("RANK", 0) > 0)
      throw ConfigError("a rank > 0 was given with a world size of 1 (set WORLD_SIZE or --world_size)");
    return l;  // one process
  }
  const int rank = a.rank != -1 ? a.rank : env_int("RANK", -1);
  if (rank == -1)
    throw ConfigError(fmt::format("a world size of {} needs this process's rank (--rank or RANK); a rank needs RANK, "
                                  "WORLD_SIZE, MASTER_ADDR and MASTER_PORT (environment) or the same as flags",
                                  world));
  if (rank >= world) throw ConfigError(fmt::format("rank {} is outside a world of {} ranks (0..{})", rank, world, world - 1));
  l.dist.world_size = world;
  l.dist.rank = rank;
  l.dist.local_rank = a.local_rank != -1 ? a.local_rank : env_int("LOCAL_RANK", 0);
  l.dist.local_world_size = a.local_world_size != -1 ? a.local_world_size : env_int("LOCAL_WORLD_SIZE", 1);
  if (l.dist.local_world_size < 1) throw ConfigError("LOCAL_WORLD_SIZE must be at least 1");
  l.dist.master_addr = !a.master_addr.empty() ? a.master_addr : env_str("MASTER_ADDR");
  l.dist.master_port = a.master_port != -1 ? a.master_port : env_int("MASTER_PORT", -1);
  if (l.dist.master_addr.empty())
    throw ConfigError(fmt::format("rank {} of {}: no rendezvous address (--master_addr or MASTER_ADDR: the address "
                                  "of rank 0)", rank, world));
  if (l.dist.master_port < 1 || l.dist.master_port > 65535)
    throw ConfigError(fmt::format("rank {} of {}: no valid rendezvous port (--master_port or MASTER_PORT, 1..65535)",
                                  rank, world));
  l.kind = Launch::Kind::kRank;
  return l;
}

int spawn_ranks(const Launch& launch) {
  const std::vector<std::string> args = rank_arguments(own_arguments());
  const DistSpec& d = launch.dist;
  const int port = d.master_port > 0 ? d.master_port : free_port();
  std::vector<pid_t> pids(static_cast<size_t>(launch.nproc), -1);
  struct sigaction sa {};
  sa.sa_handler = remember_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  const pid_t parent = ::getpid();
  std::cerr << fmt::format("cerebra: starting ranks {}..{} of {} (rendezvous {}:{}, Gloo timeout {} s)\n", d.rank,
                           d.rank + launch.nproc - 1, d.world_size, d.master_addr, port, d.timeout_seconds);
  for (int i = 0; i < launch.nproc; ++i) {
    std::vector<std::string> env = {
        "RANK=" + std::to_string(d.rank + i),         "WORLD_SIZE=" + std::to_string(d.world_size),
        "LOCAL_RANK=" + std::to_string(i),            "LOCAL_WORLD_SIZE=" + std::to_string(launch.nproc),
        "MASTER_ADDR=" + d.master_addr,               "MASTER_PORT=" + std::to_string(port)};
    std::vector<char*> argv;
    std::vector<std::string> args_copy = args;
    for (auto& s : args_copy) argv.push_back(s.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed while starting the ranks");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a rank does not outlive its launcher
      if (::getppid() != parent) ::_exit(1);
      for (auto& e : env) ::putenv(e.data());
      ::execv("/proc/self/exe", argv.data());
      ::_exit(127);
    }
    pids[static_cast<size_t>(i)] = pid;
  }

  using Clock = std::chrono::steady_clock;
  int exit_code = 0, running = launch.nproc;
  bool stopping = false;
  Clock::time_point kill_at{};
  auto stop_others = [&](int sig) {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, sig);
  };
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      const auto it = std::find(pids.begin(), pids.end(), pid);
      if (it == pids.end()) continue;
      const int local = static_cast<int>(it - pids.begin());
      *it = -1;
      --running;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      // Ranks stopped by this launcher are not reported; every other failure is.
      const bool stopped_here = stopping && WIFSIGNALED(status) &&
                                (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGKILL);
      if (!ok && !stopped_here) {
        if (exit_code == 0) exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        std::cerr << fmt::format("cerebra: rank {} {}{}\n", d.rank + local,
                                 WIFEXITED(status) ? fmt::format("exited with code {}", WEXITSTATUS(status))
                                                   : fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                                                                 strsignal(WTERMSIG(status))),
                                 !stopping && running > 0 ? "; stopping the other ranks" : "");
        if (!stopping && running > 0) {
          stopping = true;
          stop_others(SIGTERM);
          kill_at = Clock::now() + std::chrono::seconds(5);
        }
      }
      continue;
    }
    if (const int sig = g_forward_signal.exchange(0); sig != 0) {
      std::cerr << fmt::format("cerebra: {}; stopping the ranks\n", strsignal(sig));
      stop_others(sig);
      if (!stopping) {
        stopping = true;
        kill_at = Clock::now() + std::chrono::seconds(5);
      }
      if (exit_code == 0) exit_code = 128 + sig;
    }
    if (stopping && Clock::now() > kill_at) stop_others(SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_code;
}

}  // namespace cerebra
