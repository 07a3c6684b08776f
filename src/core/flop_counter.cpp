#include "cerebra/core/flop_counter.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace cerebra {

namespace {

std::mutex g_mutex;
std::map<std::string, double> g_by_op;
std::atomic<bool> g_active{false};
at::CallbackHandle g_handle = 0;
thread_local int t_depth = 0;  // > 0 while inside a counted op on this thread

double numel_of(const c10::IValue& v) {
  return v.isTensor() ? static_cast<double>(v.toTensor().numel()) : 0.0;
}

// FLOPs (2 per multiply-add) of a matmul-class op from its inputs; negative when the op is not counted.
double op_flops(const char* name, c10::ArrayRef<const c10::IValue> in) {
  auto sizes = [&](size_t i) { return in.at(i).toTensor().sizes(); };
  auto is_t = [&](size_t i) { return i < in.size() && in[i].isTensor() && in[i].toTensor().defined(); };
  if (std::strcmp(name, "aten::mm") == 0 && is_t(0) && is_t(1)) {
    return 2.0 * sizes(0)[0] * sizes(0)[1] * sizes(1)[1];
  }
  if (std::strcmp(name, "aten::addmm") == 0 && is_t(1) && is_t(2)) {
    return 2.0 * sizes(1)[0] * sizes(1)[1] * sizes(2)[1];
  }
  if (std::strcmp(name, "aten::bmm") == 0 && is_t(0) && is_t(1)) {
    return 2.0 * sizes(0)[0] * sizes(0)[1] * sizes(0)[2] * sizes(1)[2];
  }
  if ((std::strcmp(name, "aten::baddbmm") == 0 || std::strcmp(name, "aten::addbmm") == 0) && is_t(1) && is_t(2)) {
    return 2.0 * sizes(1)[0] * sizes(1)[1] * sizes(1)[2] * sizes(2)[2];
  }
  if (std::strcmp(name, "aten::mv") == 0 && is_t(0)) return 2.0 * numel_of(in[0]);
  if (std::strcmp(name, "aten::addmv") == 0 && is_t(1)) return 2.0 * numel_of(in[1]);
  if (std::strcmp(name, "aten::dot") == 0 && is_t(0)) return 2.0 * numel_of(in[0]);
  if (std::strcmp(name, "aten::convolution") == 0 && is_t(0) && is_t(1)) {
    // input (B, C_in, *spatial_in), weight (C_out, C_in/groups, *kernel); output spatial from the op's arguments.
    const auto x = sizes(0);
    const auto w = sizes(1);
    // args: input, weight, bias, stride, padding, dilation, transposed, output_padding, groups
    auto stride = in.at(3).toIntVector();
    auto padding = in.at(4).toIntVector();
    auto dilation = in.at(5).toIntVector();
    bool transposed = in.at(6).toBool();
    if (transposed) return -1.0;  // not used by the project; counted as unknown rather than guessed
    double out_spatial = 1.0, kernel = 1.0;
    for (size_t s = 2; s < x.size(); ++s) {
      int64_t k = w[s];
      int64_t o = (x[s] + 2 * padding[s - 2] - dilation[s - 2] * (k - 1) - 1) / stride[s - 2] + 1;
      out_spatial *= static_cast<double>(o);
      kernel *= static_cast<double>(k);
    }
    return 2.0 * x[0] * w[0] * w[1] * kernel * out_spatial;
  }
  return -1.0;
}

bool is_counted_name(const char* name) {
  static const char* kNames[] = {"aten::mm",     "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm",
                                 "aten::mv",     "aten::addmv", "aten::dot", "aten::convolution"};
  for (const char* n : kNames)
    if (std::strcmp(name, n) == 0) return true;
  return false;
}

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  const char* name = fn.name();
  if (!is_counted_name(name)) return nullptr;
  if (t_depth++ > 0) return nullptr;  // nested in a counted op: already accounted for
  double f = op_flops(name, fn.inputs());
  if (f > 0 && g_active.load()) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_by_op[name] += f;
  }
  return nullptr;
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext*) {
  if (is_counted_name(fn.name())) --t_depth;
}

}  // namespace

FlopCounter::FlopCounter() {
  if (g_active.exchange(true)) throw std::logic_error("FlopCounter: counters do not nest; one is already active");
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_by_op.clear();
  }
  at::enableRecordFunction(true);
  g_handle = at::addGlobalCallback(
      at::RecordFunctionCallback(on_enter, on_exit).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
}

FlopCounter::~FlopCounter() {
  at::removeCallback(g_handle);
  g_active.store(false);
}

double FlopCounter::total() const {
  std::lock_guard<std::mutex> lock(g_mutex);
  double t = 0;
  for (const auto& kv : g_by_op) t += kv.second;
  return t;
}

std::map<std::string, double> FlopCounter::by_op() const {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_by_op;
}

void add_kernel_flops(const char* kernel_name, double flops) {
  if (!g_active.load()) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_by_op[std::string("kernel:") + kernel_name] += flops;
}

}  // namespace cerebra
