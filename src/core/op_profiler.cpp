#include "cerebra/core/op_profiler.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

namespace cerebra {

namespace {

using Clock = std::chrono::steady_clock;

struct Totals {
  double seconds = 0;
  int64_t calls = 0;
};

std::mutex g_mutex;
std::map<std::string, Totals> g_totals;
std::atomic<bool> g_active{false};
at::CallbackHandle g_handle = 0;
thread_local int t_depth = 0;  // records open on this thread

struct Started : at::ObserverContext {
  Clock::time_point t0;
};

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction&) {
  if (t_depth++ > 0) return nullptr;  // nested: its time belongs to the outer record
  auto ctx = std::make_unique<Started>();
  ctx->t0 = Clock::now();
  return ctx;
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  --t_depth;
  if (!ctx) return;
  const double s = std::chrono::duration<double>(Clock::now() - static_cast<Started*>(ctx)->t0).count();
  std::lock_guard<std::mutex> lock(g_mutex);
  Totals& t = g_totals[fn.name()];
  t.seconds += s;
  ++t.calls;
}

}  // namespace

OpProfiler::OpProfiler() {
  if (g_active.exchange(true)) throw std::logic_error("OpProfiler: profilers do not nest; one is already active");
  reset();
  at::enableRecordFunction(true);
  g_handle = at::addGlobalCallback(at::RecordFunctionCallback(on_enter, on_exit)
                                       .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION,
                                                at::RecordScope::USER_SCOPE}));
}

OpProfiler::~OpProfiler() {
  at::removeCallback(g_handle);
  g_active.store(false);
}

void OpProfiler::reset() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_totals.clear();
}

std::vector<OpProfiler::Entry> OpProfiler::entries() const {
  std::vector<Entry> out;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const auto& [op, t] : g_totals) out.push_back({op, t.seconds, t.calls});
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

double OpProfiler::total_seconds() const {
  double s = 0;
  for (const auto& e : entries()) s += e.seconds;
  return s;
}

}  // namespace cerebra
