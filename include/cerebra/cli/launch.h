// How `cerebra train` runs data-parallel (include/cerebra/train/distributed.h): `--nproc N` on one machine starts N
// ranks (child processes of the same binary) and watches them; a process started with torchrun's environment
// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK, LOCAL_WORLD_SIZE) or the same as flags is one rank.
#pragma once

#include <string>
#include <vector>

#include "cerebra/train/distributed.h"

namespace CLI {
class App;
}

namespace cerebra {

// The flags (unset: -1 or empty; then the environment decides).
struct LaunchArgs {
  int nproc = -1;                  // ranks to start on this machine
  int nnodes = -1, node_rank = -1;  // with --nproc: machines, and this machine's index (ranks node_rank*nproc + i)
  int rank = -1, world_size = -1, local_rank = -1, local_world_size = -1, master_port = -1;
  std::string master_addr;
  double timeout_seconds = 120;
  double bucket_mib = 1.0;
};
void add_launch_options(CLI::App* app, LaunchArgs& args);

// What this process is.
struct Launch {
  enum class Kind { kSingle, kSpawner, kRank };
  Kind kind = Kind::kSingle;
  DistSpec dist;       // kRank: this rank; kSpawner: rank/local fields of the first rank it starts
  int nproc = 1;       // kSpawner: ranks to start here
};
// Flags first, then the environment; throws ConfigError naming what is missing or wrong (e.g. --nproc 0, RANK
// without WORLD_SIZE, a rank outside the world, no MASTER_ADDR).
Launch resolve_launch(const LaunchArgs& args);

// Threads per rank when the config leaves them to the machine (threads: 0): cores / ranks on this machine, >= 1.
int threads_per_rank(int local_world_size);

// Starts launch.nproc ranks: this executable again with this process's arguments minus the launch flags, and the
// rank's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; a free local port
// when none is given). Waits for all; when one fails (non-zero exit or a signal) it says so and stops the others
// (SIGTERM, then SIGKILL after a few seconds). SIGINT/SIGTERM to this process are passed on. Returns 0 when every
// rank succeeded, else the first failed rank's exit code (128 + signal for a signal).
int spawn_ranks(const Launch& launch);

class Commands;
// `cerebra bench allreduce`: times Gloo's all-reduce of float32 buffers between ranks (median per size, algorithm
// and bus bandwidth), the figures a scaling estimate needs.
void add_bench_allreduce_command(CLI::App* bench, Commands& commands);

}  // namespace cerebra
