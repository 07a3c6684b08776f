// `cerebra bench allreduce` (include/cerebra/cli/launch.h).
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <sstream>

#include <fmt/core.h>

#include "cerebra/cli/command.h"
#include "cerebra/cli/launch.h"
#include "cerebra/core/config.h"
#include "cerebra/train/distributed.h"

namespace cerebra {

void add_bench_allreduce_command(CLI::App* bench, Commands& commands) {
  struct Args {
    LaunchArgs launch;
    std::string mib = "0.0625,0.25,1,4,16";
    int repeats = 20;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = bench->add_subcommand(
      "allreduce", "Time Gloo's all-reduce of float32 buffers between ranks (--nproc N here, or torchrun's "
                   "environment): median ms per size, algorithm bandwidth (bytes / time) and bus bandwidth "
                   "(x 2(N-1)/N, what each link carries in a ring)");
  add_launch_options(cmd, a->launch);
  cmd->add_option("--mib", a->mib, "Comma-separated buffer sizes in MiB")->capture_default_str();
  cmd->add_option("--repeats", a->repeats, "Timed all-reduces per size (median reported)")->capture_default_str();
  commands.add(cmd, [a] {
    std::vector<double> sizes;
    std::stringstream ss(a->mib);
    for (std::string v; std::getline(ss, v, ',');) {
      double x = 0;
      try {
        x = std::stod(v);
      } catch (const std::exception&) {
        throw ConfigError("--mib: '" + v + "' is not a number");
      }
      if (!(x > 0)) throw ConfigError("--mib: sizes must be positive, got '" + v + "'");
      sizes.push_back(x);
    }
    if (sizes.empty()) throw ConfigError("--mib: no sizes");
    if (a->repeats < 1) throw ConfigError("--repeats must be at least 1");
    const Launch l = resolve_launch(a->launch);
    if (l.kind == Launch::Kind::kSpawner) return spawn_ranks(l);
    if (l.kind == Launch::Kind::kSingle)
      throw ConfigError("bench allreduce needs at least 2 ranks (--nproc 2, or WORLD_SIZE >= 2 with RANK, "
                        "MASTER_ADDR, MASTER_PORT)");
    torch::set_num_threads(1);
    Distributed d(l.dist);
    const int w = d.world_size();
    if (d.root())
      std::cout << fmt::format("all-reduce (sum, float32) over {} ranks, Gloo, median of {}\n{:>10} {:>10} {:>14} "
                               "{:>14}\n",
                               w, a->repeats, "MiB", "ms", "algbw GB/s", "busbw GB/s");
    auto sync = torch::zeros({1});
    for (double mib : sizes) {
      const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(mib * 1024 * 1024 / 4));
      auto t = torch::ones({n});
      std::vector<double> ms;
      for (int r = 0; r < a->repeats + 3; ++r) {
        d.allreduce(sync, "bench sync");
        const auto t0 = std::chrono::steady_clock::now();
        d.allreduce(t, "bench all-reduce");
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r >= 3) ms.push_back(s * 1e3);  // the first three warm up
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2], bytes = static_cast<double>(n) * 4.0;
      const double algbw = bytes / (med * 1e-3) / 1e9;
      if (d.root())
        std::cout << fmt::format("{:>10.4g} {:>10.3f} {:>14.3f} {:>14.3f}\n", bytes / 1048576.0, med, algbw,
                                 algbw * 2.0 * (w - 1) / w);
    }
    return 0;
  });
}

}  // namespace cerebra
