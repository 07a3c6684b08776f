#include "cerebra/core/runtime.h"

#include <algorithm>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <chrono>
#include <cstdlib>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <sched.h>
#include <unistd.h>

namespace cerebra {

namespace {

std::vector<int> cpus_of_this_process() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// Busy and total ticks of each CPU (/proc/stat: user nice system idle iowait irq softirq steal ...), by CPU number.
std::unordered_map<int, std::pair<uint64_t, uint64_t>> cpu_ticks() {
  std::unordered_map<int, std::pair<uint64_t, uint64_t>> ticks;
  std::ifstream stat("/proc/stat");
  std::string line;
  while (std::getline(stat, line)) {
    if (line.rfind("cpu", 0) != 0 || line.size() < 4 || !std::isdigit(static_cast<unsigned char>(line[3]))) continue;
    std::istringstream in(line.substr(3));
    int cpu = 0;
    uint64_t v[8] = {};
    in >> cpu;
    for (uint64_t& x : v) in >> x;
    uint64_t total = 0;
    for (uint64_t x : v) total += x;
    ticks[cpu] = {total - v[3] - v[4], total};
  }
  return ticks;
}

}  // namespace

int available_cores() {
  const size_t n = cpus_of_this_process().size();
  if (n > 0) return static_cast<int>(n);
  const unsigned h = std::thread::hardware_concurrency();
  return h == 0 ? 1 : static_cast<int>(h);
}

int idle_cores(double seconds) {
  const std::vector<int> cpus = cpus_of_this_process();
  const int cores = available_cores();
  const auto before = cpu_ticks();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const auto after = cpu_ticks();
  double busy = 0;
  int seen = 0;
  for (int c : cpus) {
    const auto a = before.find(c), b = after.find(c);
    if (a == before.end() || b == after.end() || b->second.second <= a->second.second) continue;
    busy += static_cast<double>(b->second.first - a->second.first) / static_cast<double>(b->second.second - a->second.second);
    ++seen;
  }
  if (seen == 0) return cores;  // no /proc/stat: every core counts as idle
  const int idle = static_cast<int>(std::floor(static_cast<double>(cores) - busy + 0.5));
  return std::clamp(idle, 1, cores);
}

int set_threads(int requested) {
  if (requested < 0)
    throw std::invalid_argument("threads must be >= 0 (0 = the cores idle at the start), got " + std::to_string(requested));
  int n = requested == 0 ? idle_cores() : requested;
  at::set_num_threads(n);
  return at::get_num_threads();
}

void prefer_passive_openmp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (::setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  // Not re-executed: this process keeps the policy it was loaded with, and says so in its summaries.
  ::unsetenv("OMP_WAIT_POLICY");
}

std::string openmp_wait_policy() {
  if (const char* p = std::getenv("OMP_WAIT_POLICY")) return p;
  if (const char* s = std::getenv("GOMP_SPINCOUNT")) return std::string("GOMP_SPINCOUNT=") + s;
  return "default";
}

int apply_runtime(const RuntimeSpec& spec) {
  install_counting_allocator();  // idempotent; peak tensor memory is read from it
  const int threads = set_threads(spec.threads);
  if (!spec.allow_slow_blas) require_openblas();
  return threads;
}

std::string loaded_blas_library() {
  // Make sure a BLAS call has happened so the library is mapped (it is linked, but be explicit).
  {
    torch::NoGradGuard g;
    auto a = torch::ones({8, 8});
    (void)torch::mm(a, a);
  }
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto pos = line.find('/');
    if (pos == std::string::npos) continue;
    std::string path = line.substr(pos);
    auto slash = path.rfind('/');
    std::string base = path.substr(slash + 1);
    if (base.rfind("libblas.so", 0) == 0 || base.rfind("libopenblas", 0) == 0 || base.rfind("libmkl", 0) == 0 ||
        base.rfind("libblis", 0) == 0) {
      return path;
    }
  }
  return "";
}

bool blas_is_openblas() { return loaded_blas_library().find("openblas") != std::string::npos; }

void require_openblas() {
  if (!blas_is_openblas()) {
    std::string lib = loaded_blas_library();
    throw std::runtime_error(
        "LibTorch is using the BLAS at '" + (lib.empty() ? std::string("<none found>") : lib) +
        "', not OpenBLAS: matrix products would run about ten times slower. Install it with "
        "`apt-get install libopenblas0-openmp` (scripts/setup.sh does this), or pass --allow-slow-blas.");
  }
}

double measure_gemm_gflops(int64_t n, int repeats) {
  torch::NoGradGuard g;
  auto a = torch::randn({n, n});
  auto b = torch::randn({n, n});
  auto c = torch::mm(a, b);  // warm-up
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    torch::mm_out(c, a, b);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
  }
  return 2.0 * n * n * n / best / 1e9;
}

std::string machine_description() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto pos = line.find(':');
      if (pos != std::string::npos) model = line.substr(pos + 2);
      break;
    }
  }
  return model + ", " + std::to_string(available_cores()) + " cores";
}

std::string torch_version() {
#ifdef TORCH_VERSION
  return TORCH_VERSION;
#else
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
#endif
}

int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream is(line.substr(6));
      int64_t kb = 0;
      is >> kb;
      return kb * 1024;
    }
  }
  return -1;
}

void reset_peak_rss() {
  release_cached_blocks();  // blocks kept for reuse by earlier work would count again
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";
}

// ---------------------------------------------------------------------------------------------------------------
// Counting allocator: wraps the default CPU allocator; each allocation carries its size so frees are counted.

namespace {

std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_peak_ever{0};  // never reset: bounds the block cache

// Live allocations: pointer -> (bytes, the inner allocator's deleter). The data pointer doubles as the context,
// as c10::Allocator::raw_allocate requires.
struct Live {
  size_t bytes;
  c10::DeleterFnPtr inner_deleter;
};
std::mutex g_live_mutex;
std::unordered_map<void*, Live>& live() {
  static auto* m = new std::unordered_map<void*, Live>();  // never destroyed: frees can happen at exit
  return *m;
}

// Freed blocks of at least kCacheMinBytes wait here for an allocation of exactly their size: a training step
// allocates the same large tensors as the previous one, and reusing them spares the page faults and the kernel's
// zeroing of a fresh mmap() for every page, every step (glibc maps blocks above 32 MiB afresh and unmaps them on
// free). Bounded by the process's peak of live tensor bytes (not reset between steps or runs; RSS stays within
// twice that peak) and kCacheMaxBytes; least recently freed blocks go first, so sizes that never recur
// (variable-length batches) age out.
constexpr size_t kCacheMinBytes = size_t{1} << 20;
constexpr size_t kCacheMaxBytes = size_t{8} << 30;
struct Cached {
  void* ptr;
  size_t bytes;
  c10::DeleterFnPtr inner_deleter;
};
std::list<Cached>& cache() {  // front = most recently freed
  static auto* c = new std::list<Cached>();
  return *c;
}
size_t g_cached_bytes = 0;      // guarded by g_live_mutex
bool g_cache_enabled = true;    // set once before the first allocation (CEREBRA_BLOCK_CACHE=0 turns it off)

// Takes a cached block of exactly `bytes`, or returns nullptr. Caller holds g_live_mutex.
Cached take_cached(size_t bytes) {
  for (auto it = cache().begin(); it != cache().end(); ++it)
    if (it->bytes == bytes) {
      Cached c = *it;
      cache().erase(it);
      g_cached_bytes -= bytes;
      return c;
    }
  return {nullptr, 0, nullptr};
}

// Frees cached blocks (least recently freed first) until at most `keep` bytes stay. Caller holds g_live_mutex;
// the blocks are returned for freeing outside the lock.
std::vector<Cached> trim_cache(size_t keep) {
  std::vector<Cached> out;
  while (g_cached_bytes > keep && !cache().empty()) {
    out.push_back(cache().back());
    g_cached_bytes -= cache().back().bytes;
    cache().pop_back();
  }
  return out;
}

void counting_delete(void* ptr) {
  if (ptr == nullptr) return;
  Live l{0, nullptr};
  std::vector<Cached> evicted;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    auto it = live().find(ptr);
    if (it == live().end()) return;  // not ours (cannot happen: only our DataPtrs carry this deleter)
    l = it->second;
    live().erase(it);
    g_current.fetch_sub(static_cast<int64_t>(l.bytes), std::memory_order_relaxed);
    if (g_cache_enabled && l.bytes >= kCacheMinBytes) {
      cache().push_front({ptr, l.bytes, l.inner_deleter});
      g_cached_bytes += l.bytes;
      cached = true;
      const auto bound = std::min(kCacheMaxBytes, static_cast<size_t>(std::max<int64_t>(g_peak_ever.load(), 0)));
      evicted = trim_cache(bound);
    }
  }
  if (!cached) l.inner_deleter(ptr);
  for (const auto& c : evicted) c.inner_deleter(c.ptr);
}

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) const override {
    if (g_cache_enabled && n >= kCacheMinBytes) {
      std::unique_lock<std::mutex> lock(g_live_mutex);
      Cached c = take_cached(n);
      if (c.ptr != nullptr) {
        live()[c.ptr] = Live{n, c.inner_deleter};
        lock.unlock();
        count(n);
        return {c.ptr, c.ptr, &counting_delete, c10::Device(c10::DeviceType::CPU)};
      }
    }
    c10::DataPtr inner = inner_->allocate(n);
    void* data = inner.get();
    if (data == nullptr) return inner;  // zero-byte allocations
    TORCH_CHECK(inner.get_context() == data, "counting allocator: the default CPU allocator's context is not its data");
    c10::Device device = inner.device();
    c10::DeleterFnPtr inner_deleter = inner.get_deleter();
    inner.release_context();
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      live()[data] = Live{n, inner_deleter};
    }
    count(n);
    return {data, data, &counting_delete, device};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &counting_delete; }

 private:
  static void count(size_t n) {
    int64_t now = g_current.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed) + static_cast<int64_t>(n);
    int64_t peak = g_peak.load(std::memory_order_relaxed);
    while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    int64_t ever = g_peak_ever.load(std::memory_order_relaxed);
    while (now > ever && !g_peak_ever.compare_exchange_weak(ever, now, std::memory_order_relaxed)) {
    }
  }

  c10::Allocator* inner_;
};

CountingAllocator* g_allocator = nullptr;

}  // namespace

void release_cached_blocks() {
  std::vector<Cached> evicted;
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    evicted = trim_cache(0);
  }
  for (const auto& c : evicted) c.inner_deleter(c.ptr);
}

void install_counting_allocator() {
  if (g_allocator != nullptr) return;
  const char* env = std::getenv("CEREBRA_BLOCK_CACHE");
  g_cache_enabled = !(env != nullptr && std::string(env) == "0");
  g_allocator = new CountingAllocator(c10::GetCPUAllocator());  // lives for the process
  c10::SetCPUAllocator(g_allocator, /*priority=*/100);
}

bool counting_allocator_installed() { return g_allocator != nullptr && c10::GetCPUAllocator() == g_allocator; }
int64_t current_tensor_bytes() { return g_current.load(); }
int64_t peak_tensor_bytes() { return g_peak.load(); }
void reset_peak_tensor_bytes() { g_peak.store(g_current.load()); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace cerebra
