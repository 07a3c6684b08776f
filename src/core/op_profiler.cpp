#include "cerebra/core/op_profiler.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

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

double OpBreakdown::outside_seconds() const {
  double inside = 0;
  for (const auto& e : ops) inside += e.seconds;
  return std::max(0.0, seconds - inside);
}

OpBreakdown profile_ops(const std::function<void()>& work, int repeats) {
  if (repeats < 1) throw std::invalid_argument("profile_ops: repeats must be >= 1");
  OpBreakdown b;
  OpProfiler profiler;
  const auto t0 = Clock::now();
  for (int i = 0; i < repeats; ++i) work();
  b.seconds = std::chrono::duration<double>(Clock::now() - t0).count() / repeats;
  b.ops = profiler.entries();
  for (auto& e : b.ops) {
    e.seconds /= repeats;
    e.calls /= repeats;
  }
  return b;
}

std::string format_breakdown(const OpBreakdown& b, int top, const std::string& what, const std::string& indent) {
  const double total = std::max(b.seconds, 1e-12);
  std::string out = fmt::format("{}{:<58} {:>9} {:>6} {:>7}\n", indent, "op (outermost records, per " + what + ")", "ms",
                                "%", "calls");
  auto line = [&](const std::string& name, double s, const std::string& calls) {
    out += fmt::format("{}{:<58} {:>9.3f} {:>6.1f} {:>7}\n", indent, name.substr(0, 58), 1e3 * s, 100.0 * s / total,
                       calls);
  };
  double rest = 0;
  int64_t rest_calls = 0;
  int shown = 0;
  for (const auto& e : b.ops) {
    if (shown++ < top) {
      // "autograd::engine::evaluate_function: MmBackward0" -> "backward MmBackward0"
      std::string name = e.op;
      const std::string prefix = "autograd::engine::evaluate_function: ";
      if (name.rfind(prefix, 0) == 0) name = "backward " + name.substr(prefix.size());
      line(name, e.seconds, std::to_string(e.calls));
    } else {
      rest += e.seconds;
      rest_calls += e.calls;
    }
  }
  if (rest > 0) line("(other ops)", rest, std::to_string(rest_calls));
  line("(outside recorded ops)", b.outside_seconds(), "");
  return out;
}

nlohmann::json breakdown_json(const OpBreakdown& b, const std::string& what) {
  nlohmann::json ops = nlohmann::json::array();
  for (const auto& e : b.ops)
    ops.push_back({{"op", e.op}, {"ms_per_" + what, 1e3 * e.seconds}, {"calls_per_" + what, e.calls}});
  return {{what + "_ms", 1e3 * b.seconds}, {"outside_ops_ms", 1e3 * b.outside_seconds()}, {"ops", ops}};
}

OpBreakdown breakdown_from_json(const nlohmann::json& j, const std::string& what) {
  OpBreakdown b;
  b.seconds = j.at(what + "_ms").get<double>() / 1e3;
  for (const auto& e : j.at("ops"))
    b.ops.push_back({e.at("op").get<std::string>(), e.at("ms_per_" + what).get<double>() / 1e3,
                     e.at("calls_per_" + what).get<int64_t>()});
  return b;
}

}  // namespace cerebra
