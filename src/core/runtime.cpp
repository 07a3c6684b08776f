#include "cerebra/runtime.h"

#include <malloc.h>

#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace cerebra {

int available_cores() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int set_threads(int requested) {
  if (requested < 0) throw std::invalid_argument("threads must be >= 0 (0 = all cores), got " + std::to_string(requested));
  int n = requested == 0 ? available_cores() : requested;
  at::set_num_threads(n);
  return at::get_num_threads();
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
  malloc_trim(0);  // hand memory freed by earlier work back first (see retain_freed_memory), or it counts again
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";
}

// ---------------------------------------------------------------------------------------------------------------
// Counting allocator: wraps the default CPU allocator; each allocation carries its size so frees are counted.

namespace {

std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};

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

void counting_delete(void* ptr) {
  if (ptr == nullptr) return;
  Live l{0, nullptr};
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    auto it = live().find(ptr);
    if (it == live().end()) return;  // not ours (cannot happen: only our DataPtrs carry this deleter)
    l = it->second;
    live().erase(it);
  }
  g_current.fetch_sub(static_cast<int64_t>(l.bytes), std::memory_order_relaxed);
  l.inner_deleter(ptr);
}

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) const override {
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
    int64_t now = g_current.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed) + static_cast<int64_t>(n);
    int64_t peak = g_peak.load(std::memory_order_relaxed);
    while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    return {data, data, &counting_delete, device};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &counting_delete; }

 private:
  c10::Allocator* inner_;
};

CountingAllocator* g_allocator = nullptr;

}  // namespace

void retain_freed_memory() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* env = std::getenv("CEREBRA_MALLOC_RETAIN");
    if (env != nullptr && std::string(env) == "0") return;
    mallopt(M_MMAP_MAX, 0);                // large blocks from the heap, not from fresh mmap()s
    mallopt(M_TRIM_THRESHOLD, INT_MAX);    // and freed memory stays in the process for the next step
  });
}

void install_counting_allocator() {
  retain_freed_memory();
  if (g_allocator != nullptr) return;
  g_allocator = new CountingAllocator(c10::GetCPUAllocator());  // lives for the process
  c10::SetCPUAllocator(g_allocator, /*priority=*/100);
}

bool counting_allocator_installed() { return g_allocator != nullptr && c10::GetCPUAllocator() == g_allocator; }
int64_t current_tensor_bytes() { return g_current.load(); }
int64_t peak_tensor_bytes() { return g_peak.load(); }
void reset_peak_tensor_bytes() { g_peak.store(g_current.load()); }

}  // namespace cerebra
