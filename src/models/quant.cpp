// Quantisation-aware training and int8 inference of Linear layers: the hook cerebra::linear, the fake-quantisation
// primitives, the per-module side table, int8 weights on disk, and the config glue. Design: include/cerebra/quant.h.
#include "cerebra/models/quant.h"

#include <torch/torch.h>

#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <limits>
#include <mutex>
#include <unordered_map>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/core/flop_counter.h"
#include "cerebra/core/state_archive.h"
#include "cerebra/models/models.h"

namespace cerebra {

namespace {

constexpr const char* kRangeBuffer = "quant_range";
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

int64_t weight_qmax(int bits) { return (int64_t{1} << (bits - 1)) - 1; }

void check_bits(int bits) {
  TORCH_CHECK(bits >= 2 && bits <= 8, "quantisation: bits must be in [2, 8] (int8 containers), got ", bits);
}

// ---- per-module state ------------------------------------------------------------------------------------------

struct LinearState {
  std::weak_ptr<torch::nn::Module> owner;
  std::string path;
  QuantMode mode = QuantMode::kFloat;
  QuantOptions options;
  std::vector<int64_t> shape;  // weight shape the state was built for
  torch::Tensor range;         // (4) float [in_lo, in_hi, out_lo, out_hi]; NaN = unobserved; may alias the buffer
  // int8
  Int8Options int8;
  torch::Tensor qweight;  // per-channel qint8 (out, in)
  c10::IValue packed;     // LinearPackedParamsBase for the engine
  bool packed_with_bias = false;
  bool use_static = false;
  ActQuantParams in_params, out_params;
  int64_t calls = 0, calls_int8 = 0, calls_static = 0;
};

std::mutex g_mutex;
std::unordered_map<const void*, std::shared_ptr<LinearState>> g_states;
std::atomic<int64_t> g_entries{0};  // g_states.size(): lets the plain-fp32 case skip the lookup

std::shared_ptr<LinearState> find_state(const torch::nn::LinearImpl* key) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_states.find(key);
  if (it == g_states.end()) return nullptr;
  if (it->second->owner.expired()) {  // the module died; its address was reused
    g_states.erase(it);
    g_entries = static_cast<int64_t>(g_states.size());
    return nullptr;
  }
  return it->second;
}

std::shared_ptr<LinearState> get_or_create(const std::shared_ptr<torch::nn::LinearImpl>& m, const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& slot = g_states[m.get()];
  if (!slot || slot->owner.expired()) {
    slot = std::make_shared<LinearState>();
    slot->owner = m;
    slot->shape = m->weight.sizes().vec();
  }
  slot->path = path;
  g_entries = static_cast<int64_t>(g_states.size());
  return slot;
}

void erase_state(const torch::nn::LinearImpl* key) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_states.erase(key);
  g_entries = static_cast<int64_t>(g_states.size());
}

// Every Linear inside a model with its path (the model itself is not visited: it may live on the stack).
std::vector<std::pair<std::string, std::shared_ptr<torch::nn::LinearImpl>>> linears_of(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::LinearImpl>>> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false))
    if (auto lin = std::dynamic_pointer_cast<torch::nn::LinearImpl>(item.value())) out.emplace_back(item.key(), lin);
  return out;
}

torch::Tensor range_buffer(torch::nn::LinearImpl& m, bool create) {
  auto buffers = m.named_buffers(/*recurse=*/false);
  if (const auto* b = buffers.find(kRangeBuffer)) return *b;
  if (!create) return {};
  return m.register_buffer(kRangeBuffer, torch::full({4}, kNaN));
}

bool observed(const torch::Tensor& range, int slot) {
  return range.defined() && !std::isnan(range.data_ptr<float>()[2 * slot]);
}

// Records the range of t into slot 0 (input) or 1 (output): EMA or running min/max.
void observe(LinearState& st, int slot, const torch::Tensor& t, bool ema) {
  if (!st.range.defined() || t.numel() == 0) return;
  torch::NoGradGuard g;
  auto mm = torch::aminmax(t.detach());
  const float lo = std::get<0>(mm).item<float>(), hi = std::get<1>(mm).item<float>();
  float* r = st.range.data_ptr<float>() + 2 * slot;
  if (std::isnan(r[0])) {
    r[0] = lo;
    r[1] = hi;
  } else if (ema) {
    const auto a = static_cast<float>(st.options.ema);
    r[0] = a * r[0] + (1.0f - a) * lo;
    r[1] = a * r[1] + (1.0f - a) * hi;
  } else {
    r[0] = std::min(r[0], lo);
    r[1] = std::max(r[1], hi);
  }
}

// ---- int8 ------------------------------------------------------------------------------------------------------

c10::IValue call_op(const char* name, std::vector<c10::IValue> args) {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  torch::jit::Stack stack(std::make_move_iterator(args.begin()), std::make_move_iterator(args.end()));
  op.callBoxed(&stack);
  return stack.at(0);
}

torch::Tensor quantize_weight(const torch::Tensor& w, int bits) {
  torch::NoGradGuard g;
  const int64_t q = weight_qmax(bits);
  auto scale = weight_scales(w, bits);  // (out) float
  auto values = torch::clamp(torch::round(w.detach() * scale.reciprocal().unsqueeze(1)), -q, q).to(torch::kInt8);
  return at::_make_per_channel_quantized_tensor(values, scale.to(torch::kDouble),
                                                torch::zeros({w.size(0)}, torch::kLong), 0);
}

// Activation parameters of the static path from the tracked ranges (both must have been observed).
void configure_static(LinearState& st) {
  st.use_static = st.int8.activations == "static" && observed(st.range, 0) && observed(st.range, 1);
  if (!st.use_static) return;
  const float* r = st.range.data_ptr<float>();
  st.in_params = activation_params(r[0], r[1], 8);
  st.out_params = activation_params(r[2], r[3], 8);
}

void reset_for_new_shape(LinearState& st, const torch::nn::LinearImpl& m) {
  st.shape = m.weight.sizes().vec();
  if (st.range.defined()) st.range.fill_(kNaN);
  st.qweight = torch::Tensor();
  st.packed = c10::IValue();
  st.use_static = false;
}

torch::Tensor int8_forward(LinearState& st, const torch::nn::LinearImpl& m, const torch::Tensor& x, bool add_bias) {
  TORCH_CHECK(!torch::GradMode::is_enabled() || !(x.requires_grad() || m.weight.requires_grad()),
              "int8 Linear '", st.path, "' is inference-only: run it under torch::NoGradGuard (cerebra::predict does)");
  TORCH_CHECK(x.scalar_type() == torch::kFloat, "int8 Linear '", st.path, "' expects float32 input, got ",
              x.scalar_type());
  if (!st.qweight.defined()) st.qweight = quantize_weight(m.weight, st.int8.bits);
  if (st.packed.isNone() || st.packed_with_bias != add_bias) {
    c10::optional<torch::Tensor> bias;
    if (add_bias && m.bias.defined()) bias = m.bias.detach().contiguous();
    st.packed = call_op("quantized::linear_prepack", {st.qweight, bias});
    st.packed_with_bias = add_bias;
  }
  ++st.calls_int8;
  auto xc = x.contiguous();
  // The quantised GEMM is not an ATen matmul the FLOP counter sees: report its multiply-adds as any kernel does.
  add_kernel_flops("int8_linear", 2.0 * static_cast<double>(xc.numel()) * static_cast<double>(m.weight.size(0)));
  if (st.use_static) {
    ++st.calls_static;
    auto xq = at::quantize_per_tensor(xc, st.in_params.scale, st.in_params.zero_point, torch::kQUInt8);
    auto yq = call_op("quantized::linear", {xq, st.packed, st.out_params.scale, st.out_params.zero_point}).toTensor();
    return yq.dequantize();
  }
  return call_op("quantized::linear_dynamic", {xc, st.packed, false}).toTensor();
}

std::string mode_name(QuantMode m) {
  switch (m) {
    case QuantMode::kFloat: return "fp32";
    case QuantMode::kObserve: return "observe";
    case QuantMode::kFakeQuant: return "fake_quant";
    case QuantMode::kInt8: return "int8";
  }
  return "?";
}

std::string archive_key(const std::string& path, const char* field) {
  std::string k = path.empty() ? std::string("model") : path;
  std::string out;
  for (char c : k) out += c == '.' ? std::string("__") : std::string(1, c);
  return out + "___" + field;
}

const std::map<std::string, at::QEngine>& engine_names() {
  static const std::map<std::string, at::QEngine> m = {
      {"onednn", at::QEngine::ONEDNN}, {"qnnpack", at::QEngine::QNNPACK}, {"fbgemm", at::QEngine::FBGEMM}};
  return m;
}

}  // namespace

// ---- the hook --------------------------------------------------------------------------------------------------

torch::Tensor linear(const torch::nn::Linear& m, const torch::Tensor& x, bool add_bias) {
  const torch::nn::LinearImpl* impl = m.get();
  const torch::Tensor bias = add_bias ? impl->bias : torch::Tensor();
  if (g_entries.load(std::memory_order_relaxed) == 0) return torch::linear(x, impl->weight, bias);
  auto st = find_state(impl);
  if (!st || st->mode == QuantMode::kFloat) return torch::linear(x, impl->weight, bias);
  ++st->calls;
  if (impl->weight.sizes() != c10::IntArrayRef(st->shape)) reset_for_new_shape(*st, *impl);
  switch (st->mode) {
    case QuantMode::kObserve: {
      observe(*st, 0, x, /*ema=*/false);
      auto y = torch::linear(x, impl->weight, bias);
      observe(*st, 1, y, false);
      return y;
    }
    case QuantMode::kFakeQuant: {
      const bool track = impl->is_training();
      if (track) observe(*st, 0, x, /*ema=*/true);
      torch::Tensor xin = x;
      if (observed(st->range, 0)) {
        const float* r = st->range.data_ptr<float>();
        xin = fake_quant_activation(x, activation_params(r[0], r[1], st->options.bits));
      }
      auto y = torch::linear(xin, fake_quant_weight(impl->weight, st->options.bits), bias);
      if (track) observe(*st, 1, y, true);
      return y;
    }
    case QuantMode::kInt8: return int8_forward(*st, *impl, x, add_bias);
    case QuantMode::kFloat: break;
  }
  return torch::linear(x, impl->weight, bias);
}

// ---- fake quantisation -----------------------------------------------------------------------------------------

torch::Tensor weight_scales(const torch::Tensor& w, int bits) {
  check_bits(bits);
  TORCH_CHECK(w.dim() == 2, "weight_scales: weight must be (out, in), got ", w.sizes());
  torch::NoGradGuard g;
  return (w.detach().abs().amax(1) / static_cast<double>(weight_qmax(bits))).clamp_min(1e-12).to(torch::kFloat);
}

torch::Tensor fake_quant_weight(const torch::Tensor& w, int bits) {
  const int64_t q = weight_qmax(bits);
  auto scale = weight_scales(w, bits);
  auto zero = torch::zeros({w.size(0)}, torch::TensorOptions().dtype(torch::kInt));
  return at::fake_quantize_per_channel_affine(w, scale, zero, /*axis=*/0, -q, q);
}

torch::Tensor fake_quant_weight_ref(const torch::Tensor& w, int bits) {
  const int64_t q = weight_qmax(bits);
  auto scale = weight_scales(w, bits).unsqueeze(1);  // (out, 1)
  auto inv = scale.reciprocal();                      // 1/scale in float, as the fused kernel computes it
  auto fq = torch::clamp(torch::round(w.detach() * inv), -q, q) * scale;
  return fq + (w - w.detach());  // value fq, gradient 1 (every weight is inside its channel's range)
}

ActQuantParams activation_params(double lo, double hi, int bits) {
  check_bits(bits);
  TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "activation_params: bad range [", lo, ", ", hi, "]");
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  ActQuantParams p;
  p.quant_max = (int64_t{1} << bits) - 1;
  const double eps = std::numeric_limits<float>::epsilon();
  p.scale = static_cast<float>(std::max((hi - lo) / static_cast<double>(p.quant_max), eps));  // engines keep float
  p.zero_point = std::clamp<int64_t>(static_cast<int64_t>(std::nearbyint(-lo / p.scale)), 0, p.quant_max);
  return p;
}

torch::Tensor fake_quant_activation(const torch::Tensor& x, const ActQuantParams& p) {
  return at::fake_quantize_per_tensor_affine(x, p.scale, p.zero_point, 0, p.quant_max);
}

torch::Tensor fake_quant_activation_ref(const torch::Tensor& x, const ActQuantParams& p) {
  const float scale = static_cast<float>(p.scale), inv = 1.0f / scale;
  auto xd = x.detach();
  auto qi = torch::round(xd * static_cast<double>(inv)) + static_cast<double>(p.zero_point);
  auto inside = qi.ge(0).logical_and(qi.le(static_cast<double>(p.quant_max))).to(x.scalar_type());
  auto fq = (qi.clamp(0, static_cast<double>(p.quant_max)) - static_cast<double>(p.zero_point)) * static_cast<double>(scale);
  return fq + (x - xd) * inside;  // straight-through inside the range, zero gradient where clamped
}

// ---- model-level control ---------------------------------------------------------------------------------------

void prepare_qat(torch::nn::Module& model) {
  for (auto& [path, lin] : linears_of(model)) range_buffer(*lin, /*create=*/true);
}

void inherit_range_buffer(const torch::nn::LinearImpl& replaced, torch::nn::LinearImpl& replacement) {
  if (replaced.named_buffers(/*recurse=*/false).find(kRangeBuffer)) range_buffer(replacement, /*create=*/true);
}

void set_quant_mode(torch::nn::Module& model, QuantMode mode, const QuantOptions& options) {
  check_bits(options.bits);
  TORCH_CHECK(options.ema >= 0.0 && options.ema < 1.0, "quantisation: ema must be in [0, 1), got ", options.ema);
  if (mode == QuantMode::kInt8) {
    Int8Options o;
    o.bits = options.bits;
    enable_int8(model, o);
    return;
  }
  for (auto& [path, lin] : linears_of(model)) {
    if (mode == QuantMode::kFloat) {
      erase_state(lin.get());
      continue;
    }
    auto st = get_or_create(lin, path);
    if (lin->weight.sizes() != c10::IntArrayRef(st->shape)) reset_for_new_shape(*st, *lin);
    st->mode = mode;
    st->options = options;
    st->range = range_buffer(*lin, /*create=*/true);
    st->qweight = torch::Tensor();
    st->packed = c10::IValue();
  }
}

// ---- int8 inference --------------------------------------------------------------------------------------------

void require_quant_engine(const std::string& engine) {
  auto it = engine_names().find(engine);
  const auto& supported = at::globalContext().supportedQEngines();
  std::string available;
  for (const auto& [name, e] : engine_names())
    if (std::find(supported.begin(), supported.end(), e) != supported.end())
      available += (available.empty() ? "" : ", ") + name;
  if (it == engine_names().end())
    throw std::runtime_error("unknown quantised engine '" + engine + "'; expected onednn|qnnpack (available in this "
                             "LibTorch build: " + (available.empty() ? "none" : available) + ")");
  if (std::find(supported.begin(), supported.end(), it->second) == supported.end())
    throw std::runtime_error("quantised engine '" + engine + "' is not available in this LibTorch build (available: " +
                             (available.empty() ? "none" : available) + ")");
  at::globalContext().setQEngine(it->second);
}

void enable_int8(torch::nn::Module& model, const Int8Options& options) {
  check_bits(options.bits);
  if (options.activations != "dynamic" && options.activations != "static")
    throw std::runtime_error("int8: activations must be dynamic|static, got '" + options.activations + "'");
  require_quant_engine(options.engine);
  for (auto& [path, lin] : linears_of(model)) {
    auto st = get_or_create(lin, path);
    st->shape = lin->weight.sizes().vec();
    st->int8 = options;
    st->qweight = quantize_weight(lin->weight, options.bits);
    st->packed = c10::IValue();
    st->range = range_buffer(*lin, /*create=*/false);
    if (st->range.defined()) st->range = st->range.clone();  // freeze what int8 uses
    configure_static(*st);
    st->mode = QuantMode::kInt8;
  }
}

void save_int8_weights(const torch::nn::Module& model, const std::string& path) {
  torch::serialize::OutputArchive ar;
  int64_t n = 0;
  for (auto& [p, lin] : linears_of(model)) {
    auto st = find_state(lin.get());
    if (!st || st->mode != QuantMode::kInt8) continue;
    if (!st->qweight.defined()) st->qweight = quantize_weight(lin->weight, st->int8.bits);
    ar.write(archive_key(p, "weight_int8"), st->qweight.int_repr());
    ar.write(archive_key(p, "weight_scale"), st->qweight.q_per_channel_scales().to(torch::kFloat));
    ar.write(archive_key(p, "range"), st->range.defined() ? st->range : torch::full({4}, kNaN));
    ++n;
  }
  if (n == 0) throw std::runtime_error("save_int8_weights: no Linear layer is in int8 mode");
  ar.save_to(path);
}

void load_int8_weights(torch::nn::Module& model, const std::string& path, const Int8Options& options) {
  if (!std::filesystem::exists(path)) throw std::runtime_error("int8 weights " + path + " not found");
  require_quant_engine(options.engine);
  torch::serialize::InputArchive ar;
  try {
    load_archive(ar, path);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot load int8 weights " + path + ": " + e.what());
  }
  Int8Options o = options;
  for (auto& [p, lin] : linears_of(model)) {
    torch::Tensor values, scales, range;
    const std::string name = p.empty() ? "(model)" : p;
    if (!ar.try_read(archive_key(p, "weight_int8"), values) || !ar.try_read(archive_key(p, "weight_scale"), scales))
      throw std::runtime_error(path + ": no int8 weights for Linear '" + name + "'");
    if (values.sizes() != lin->weight.sizes() || values.scalar_type() != torch::kInt8 ||
        scales.numel() != lin->weight.size(0))
      throw std::runtime_error(c10::str(path, ": int8 weight of Linear '", name, "' is ", values.scalar_type(), " ",
                                        values.sizes(), " with ", scales.numel(), " scales; the model expects Char ",
                                        lin->weight.sizes(), " with ", lin->weight.size(0), " scales"));
    auto st = get_or_create(lin, p);
    st->shape = lin->weight.sizes().vec();
    st->int8 = o;
    st->qweight = at::_make_per_channel_quantized_tensor(values, scales.to(torch::kDouble),
                                                         torch::zeros({values.size(0)}, torch::kLong), 0);
    st->packed = c10::IValue();
    st->range = ar.try_read(archive_key(p, "range"), range) ? range.to(torch::kFloat).contiguous() : torch::Tensor();
    configure_static(*st);
    st->mode = QuantMode::kInt8;
  }
}

nlohmann::json quant_report(const torch::nn::Module& model) {
  nlohmann::json out = nlohmann::json::object();
  for (auto& [p, lin] : linears_of(model)) {
    nlohmann::json j = {{"shape", lin->weight.sizes().vec()}};
    auto st = find_state(lin.get());
    j["mode"] = mode_name(st ? st->mode : QuantMode::kFloat);
    if (st) {
      j["calls"] = st->calls;
      if (st->mode == QuantMode::kInt8) {
        j["calls_int8"] = st->calls_int8;
        j["activations"] = st->use_static ? "static" : "dynamic";
        j["engine"] = st->int8.engine;
        j["weight_dtype"] = st->qweight.defined() ? std::string(c10::toString(st->qweight.scalar_type())) : "";
      }
      if (st->range.defined()) {
        const float* r = st->range.data_ptr<float>();
        auto num = [](float v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
        j["range"] = {num(r[0]), num(r[1]), num(r[2]), num(r[3])};
      }
    }
    out[p.empty() ? "(model)" : p] = j;
  }
  return out;
}

void reset_quant_counters(const torch::nn::Module& model) {
  for (auto& [p, lin] : linears_of(model))
    if (auto st = find_state(lin.get())) st->calls = st->calls_int8 = st->calls_static = 0;
}

torch::Tensor packed_int8_weight(const torch::nn::Linear& m) {
  auto st = find_state(m.get());
  if (!st || st->mode != QuantMode::kInt8 || st->packed.isNone()) return {};
  return call_op("quantized::linear_unpack", {st->packed}).toTensor();  // outputs (weight, bias): the first
}

// ---- configuration ---------------------------------------------------------------------------------------------

void quant_before_load(torch::nn::Module& model, const QuantSpec& spec) {
  if (spec.qat) prepare_qat(model);
}

void quant_after_load(torch::nn::Module& model, const QuantSpec& spec, const std::string& run_dir) {
  if (spec.int8)
    load_int8_weights(model, (std::filesystem::path(run_dir) / "model_int8.pt").string(), spec.int8_options());
  else if (spec.qat)
    set_quant_mode(model, QuantMode::kFakeQuant, spec.options());
}

nlohmann::json quant_summary(const torch::nn::Module& model, const QuantSpec& spec) {
  if (!spec.qat && !spec.int8) return nullptr;
  nlohmann::json s = {
      {"qat", spec.qat},
      {"int8", spec.int8},
      {"bits", spec.bits},
      {"weights", "per output channel, symmetric, signed (zero point 0, values in [-(2^(b-1)-1), 2^(b-1)-1])"},
      {"activations", "per tensor, asymmetric, unsigned (range widened to contain 0)"},
      {"fp32_parts", "embeddings, numeric-feature tokens, norms, attention score/value products, softmax, "
                     "convolutions, selective scan"},
  };
  if (spec.qat) {
    s["qat_start_epoch"] = spec.qat_start_epoch;
    s["qat_ema"] = spec.ema;
  }
  if (spec.int8) {
    s["engine"] = spec.int8_engine;
    s["int8_activations"] = spec.int8_activations;
  }
  int64_t n = 0, n_int8 = 0, n_fq = 0;
  for (auto& [p, lin] : linears_of(model)) {
    ++n;
    if (auto st = find_state(lin.get())) {
      n_int8 += st->mode == QuantMode::kInt8;
      n_fq += st->mode == QuantMode::kFakeQuant;
    }
  }
  s["linear_layers"] = n;
  s["linear_layers_fake_quant"] = n_fq;
  s["linear_layers_int8"] = n_int8;
  return s;
}

}  // namespace cerebra
