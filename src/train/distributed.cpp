// Data-parallel training over c10d/Gloo (include/cerebra/train/distributed.h).
#include "cerebra/train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/models/models.h"

namespace cerebra {

namespace {

using Clock = std::chrono::steady_clock;

std::string first_line(std::string s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return first_line(c->what_without_backtrace());
  return first_line(e.what());
}

bool loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

struct Distributed::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  std::chrono::milliseconds timeout{0};

  // Gradient buckets over the trainable parameters.
  struct Bucket {
    std::vector<size_t> members;   // indices into params
    std::vector<int64_t> offsets;  // of each member's gradient in flat
    int64_t grads = 0;             // gradient elements; one "used" flag per member follows them
    torch::Tensor flat;
    size_t remaining = 0;  // members whose gradient has not arrived in this backward
    bool launched = false;
    c10::intrusive_ptr<c10d::Work> work;
  };
  struct Slot {
    size_t bucket = 0, k = 0;
    bool filled = false;
  };
  std::vector<torch::Tensor> params;
  std::vector<unsigned> hooks;
  std::vector<Bucket> buckets;
  std::vector<Slot> slots;
  std::mutex mu;
  bool armed = false;
  double share = 1.0;
  size_t next_launch = 0;
  Clock::time_point first_launch;
  bool any_launched = false;

  // statistics
  int64_t steps = 0;
  double wait_seconds = 0, window_seconds = 0;

  void detach() {
    for (size_t i = 0; i < hooks.size(); ++i) params[i].remove_hook(hooks[i]);
    hooks.clear();
    params.clear();
    buckets.clear();
    slots.clear();
  }

  void launch(Bucket& b) {
    if (share != 1.0) b.flat.narrow(0, 0, b.grads).mul_(share);
    std::vector<at::Tensor> t{b.flat};
    if (!any_launched) {
      first_launch = Clock::now();
      any_launched = true;
    }
    b.work = pg->allreduce(t);
    b.launched = true;
  }

  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].remaining == 0) launch(buckets[next_launch++]);
  }

  void on_grad(size_t i, const torch::Tensor& g) {
    std::lock_guard<std::mutex> lock(mu);
    if (!armed) return;
    Slot& s = slots[i];
    Bucket& b = buckets[s.bucket];
    TORCH_CHECK(!b.launched, "a second gradient for a parameter whose bucket was already all-reduced");
    torch::NoGradGuard ng;
    auto dst = b.flat.narrow(0, b.offsets[s.k], params[i].numel());
    if (s.filled) {
      dst.add_(g.reshape({-1}));
      return;
    }
    dst.copy_(g.reshape({-1}));
    b.flat.narrow(0, b.grads + static_cast<int64_t>(s.k), 1).fill_(1.0);
    s.filled = true;
    if (--b.remaining == 0) launch_ready();
  }
};

Distributed::Distributed(const DistSpec& spec) : spec_(spec), impl_(std::make_unique<Impl>()) {
  if (spec.world_size < 2) throw std::invalid_argument("distributed: world size must be at least 2");
  impl_->timeout = std::chrono::milliseconds(static_cast<int64_t>(std::llround(spec.timeout_seconds * 1000.0)));
  const std::string where = fmt::format("{}:{}", spec.master_addr, spec.master_port);
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<std::uint16_t>(spec.master_port);
    o.isServer = spec.rank == 0;
    o.numWorkers = static_cast<std::size_t>(spec.world_size);
    o.waitWorkers = true;
    o.timeout = impl_->timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(spec.master_addr, o);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format(
        "distributed: rank {} of {}: the rendezvous at {} failed within {} s ({}): {}", spec.rank, spec.world_size,
        where, spec.timeout_seconds,
        spec.rank == 0 ? "rank 0 hosts it; is the port free and did every rank start?"
                       : "rank 0 hosts it; is it running and reachable?",
        message_of(e)));
  }
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(impl_->timeout);
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (loopback(spec.master_addr))
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = 2;
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, spec.rank, spec.world_size, opts);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("distributed: rank {} of {}: connecting the Gloo process group (rendezvous "
                                         "{}) failed within {} s; did all {} ranks start? ({})",
                                         spec.rank, spec.world_size, where, spec.timeout_seconds, spec.world_size,
                                         message_of(e)));
  }
}

Distributed::~Distributed() {
  if (impl_) impl_->detach();
}

std::pair<int64_t, int64_t> Distributed::slice_of(int64_t lo, int64_t hi, int rank, int world_size) {
  const int64_t n = hi - lo, w = world_size, r = rank;
  const int64_t base = n / w, extra = n % w;
  const int64_t start = lo + r * base + std::min(r, extra);
  return {start, start + base + (r < extra ? 1 : 0)};
}

namespace {

void wait_for(const c10::intrusive_ptr<c10d::Work>& work, const DistSpec& spec, std::chrono::milliseconds timeout,
              const char* what) {
  try {
    work->wait(timeout);
  } catch (const std::exception& e) {
    throw std::runtime_error(fmt::format("distributed: {} failed on rank {} of {}: another rank stopped or did not "
                                         "answer within {} s ({})",
                                         what, spec.rank, spec.world_size, spec.timeout_seconds, message_of(e)));
  }
}

}  // namespace

void Distributed::allreduce_sum(std::vector<double>& values, const char* what) {
  if (values.empty()) return;
  auto t = torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kFloat64).clone();
  std::vector<at::Tensor> v{t};
  wait_for(impl_->pg->allreduce(v), spec_, impl_->timeout, what);
  std::memcpy(values.data(), t.data_ptr<double>(), values.size() * sizeof(double));
}

void Distributed::allreduce(torch::Tensor& tensor, const char* what) {
  std::vector<at::Tensor> v{tensor};
  wait_for(impl_->pg->allreduce(v), spec_, impl_->timeout, what);
}

int64_t Distributed::broadcast_int(int64_t value, const char* what) {
  auto t = torch::tensor({value}, torch::kInt64);
  std::vector<at::Tensor> v{t};
  wait_for(impl_->pg->broadcast(v), spec_, impl_->timeout, what);
  return t.item<int64_t>();
}

std::string Distributed::broadcast_bytes(std::string bytes, const char* what) {
  const int64_t n = broadcast_int(static_cast<int64_t>(bytes.size()), what);
  if (n == 0) return {};
  auto t = torch::empty({n}, torch::kUInt8);
  if (root()) std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), static_cast<size_t>(n));
  std::vector<at::Tensor> v{t};
  wait_for(impl_->pg->broadcast(v), spec_, impl_->timeout, what);
  return std::string(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), static_cast<size_t>(n));
}

void Distributed::broadcast(std::vector<torch::Tensor> tensors, const char* what) {
  torch::NoGradGuard ng;
  std::map<c10::ScalarType, std::vector<torch::Tensor>> by_type;
  for (auto& t : tensors)
    if (t.defined() && t.numel() > 0) by_type[t.scalar_type()].push_back(t);
  for (auto& [type, group] : by_type) {
    std::vector<torch::Tensor> flat_parts;
    for (const auto& t : group) flat_parts.push_back(t.detach().reshape({-1}));
    auto flat = torch::cat(flat_parts);
    std::vector<at::Tensor> v{flat};
    wait_for(impl_->pg->broadcast(v), spec_, impl_->timeout, what);
    int64_t off = 0;
    for (auto& t : group) {
      t.detach().copy_(flat.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

void Distributed::require_same(const std::string& text, const char* what) {
  const std::string theirs = broadcast_bytes(text, what);
  std::vector<double> differs{theirs == text ? 0.0 : 1.0};
  allreduce_sum(differs, what);
  if (differs[0] > 0)
    throw std::runtime_error(fmt::format("distributed: the {} of {} rank(s) differs from rank 0's (rank {} {}); every "
                                         "rank must run the same config on the same data",
                                         what, static_cast<int>(differs[0]), spec_.rank,
                                         theirs == text ? "agrees" : "differs"));
}

void Distributed::attach(Model& model) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  m.detach();
  // Rank 0's values everywhere: the same start even if initialisation drew differently.
  std::vector<torch::Tensor> state;
  for (const auto& p : model.parameters()) state.push_back(p);
  for (const auto& b : model.buffers()) state.push_back(b);
  broadcast(state, "broadcasting rank 0's weights");

  for (const auto& p : model.parameters())
    if (p.requires_grad()) m.params.push_back(p);
  const double cap = std::max(spec_.bucket_mib, 1e-6) * 1024.0 * 1024.0;
  m.slots.assign(m.params.size(), {});
  // Reverse order of registration: the output layers' gradients come first in backward.
  for (size_t j = m.params.size(); j-- > 0;) {
    const auto& p = m.params[j];
    const double bytes = static_cast<double>(p.numel()) * static_cast<double>(p.element_size());
    bool fresh = m.buckets.empty();
    if (!fresh) {
      const auto& last = m.params[m.buckets.back().members.front()];
      const double used = static_cast<double>(m.buckets.back().grads) * static_cast<double>(last.element_size());
      fresh = last.scalar_type() != p.scalar_type() || used + bytes > cap;
    }
    if (fresh) m.buckets.emplace_back();
    auto& b = m.buckets.back();
    m.slots[j] = {m.buckets.size() - 1, b.members.size(), false};
    b.members.push_back(j);
    b.offsets.push_back(b.grads);
    b.grads += p.numel();
  }
  for (auto& b : m.buckets) {
    const auto& p0 = m.params[b.members.front()];
    b.flat = torch::zeros({b.grads + static_cast<int64_t>(b.members.size())}, p0.options().requires_grad(false));
  }
  Impl* impl = impl_.get();
  for (size_t j = 0; j < m.params.size(); ++j)
    m.hooks.push_back(m.params[j].register_hook([impl, j](const torch::Tensor& g) { impl->on_grad(j, g); }));
}

void Distributed::sync_buffers(Model& model) {
  std::vector<torch::Tensor> floating;
  for (const auto& b : model.buffers())
    if (b.is_floating_point()) floating.push_back(b);
  if (!floating.empty()) broadcast(floating, "broadcasting rank 0's buffers");
}

void Distributed::begin_backward(double share) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  for (auto& b : m.buckets) {
    b.flat.zero_();
    b.remaining = b.members.size();
    b.launched = false;
    b.work.reset();
  }
  for (auto& s : m.slots) s.filled = false;
  m.share = share;
  m.next_launch = 0;
  m.any_launched = false;
  m.armed = true;
}

void Distributed::finish_backward() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.armed = false;
    for (; m.next_launch < m.buckets.size(); ++m.next_launch) m.launch(m.buckets[m.next_launch]);
  }
  const auto t0 = Clock::now();
  for (auto& b : m.buckets) wait_for(b.work, spec_, m.timeout, "the gradient all-reduce");
  const auto t1 = Clock::now();
  m.wait_seconds += std::chrono::duration<double>(t1 - t0).count();
  if (m.any_launched) m.window_seconds += std::chrono::duration<double>(t1 - m.first_launch).count();
  ++m.steps;
  torch::NoGradGuard ng;
  for (auto& b : m.buckets) {
    auto used = b.flat.narrow(0, b.grads, static_cast<int64_t>(b.members.size())).to(torch::kFloat64).contiguous();
    const double* u = used.data_ptr<double>();
    for (size_t k = 0; k < b.members.size(); ++k) {
      if (u[k] <= 0) continue;  // no rank produced a gradient for it
      auto& p = m.params[b.members[k]];
      auto v = b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes());
      if (p.grad().defined())
        p.mutable_grad().copy_(v);
      else
        p.mutable_grad() = v.clone();
    }
  }
}

nlohmann::json Distributed::stats() const {
  const Impl& m = *impl_;
  int64_t bytes = 0;
  for (const auto& b : m.buckets) bytes += b.flat.numel() * b.flat.element_size();
  const double steps = static_cast<double>(std::max<int64_t>(m.steps, 1));
  return {{"world_size", spec_.world_size},
          {"backend", "gloo"},
          {"bucket_mib", spec_.bucket_mib},
          {"buckets", m.buckets.size()},
          {"allreduce_bytes_per_step", bytes},
          {"steps", m.steps},
          {"allreduce_wait_seconds_per_step", m.wait_seconds / steps},
          {"allreduce_window_seconds_per_step", m.window_seconds / steps},
          {"overlap", "gradient hooks: a bucket is all-reduced as soon as backward has filled it"}};
}

}  // namespace cerebra
