// Quantisation: 8-bit quantisation-aware training (fake quantisation with straight-through gradients) and real
// int8 inference through LibTorch's quantised engines (ONEDNN or QNNPACK).
//
// One hook point. Every model calls `cerebra::linear(m, x)` where it would call `m->forward(x)` for a
// torch::nn::Linear. What it computes depends on the module's quantisation mode, set for a whole model with
// set_quant_mode():
//   kFloat      torch::linear(x, W, b): exactly m->forward(x) (the default; no per-module state is consulted)
//   kObserve    fp32, and records the input/output ranges (running min/max): calibration for static int8
//   kFakeQuant  QAT: linear(fq_act(x), fq_w(W), b), fp32 arithmetic on quantised values; in training mode the
//               input/output ranges are tracked with an exponential moving average (EMA) first
//   kInt8       real int8 arithmetic: quantized::linear_dynamic (activations quantised per call from their own
//               min/max) or quantized::linear (static: activations quantised with the tracked input range, the
//               output requantised with the tracked output range, then dequantised), with int8 weights prepacked
//               by quantized::linear_prepack for the selected engine. Inference only (no autograd).
//
// The scheme (same in QAT and int8, so QAT trains for what int8 inference computes):
//   weights      per output channel, symmetric, signed: scale_c = max_k |W_ck| / q, q = 2^(bits-1) − 1, values
//                round(W/scale) clamped to [−q, q] (zero point 0; the int8 value −128 is never used).
//   activations  per tensor, asymmetric, unsigned: range [lo, hi] widened to contain 0, scale = (hi − lo)/(2^bits − 1),
//                zero point = round(−lo/scale) in [0, 2^bits − 1] — the usual quint8 scheme of LibTorch's observers.
//   gradients    straight-through: d fq(x)/dx = 1 where x is inside the representable range, 0 outside (weights are
//                always inside, their scale comes from their own max); scales get no gradient.
// Only Linear layers are quantised. Convolutions (CNN mixer, Mamba's depthwise conv, the Cerebra compressor's conv),
// embeddings, norms, the attention score/value products, softmax and the selective scan stay fp32.
//
// The model-level functions visit every Linear *inside* the module they are given (named_modules without the root,
// so a model may live on the stack); paths in reports and in model_int8.pt are those of named_modules().
// Per-module state lives in a side table keyed by the Linear module (a weak reference, so a destroyed module's
// entry is never reused) and is (re)created by set_quant_mode(), which walks the model: a Linear that was replaced
// by a smaller one (pruning) gets fresh state the next time the mode is set (the trainer hook does so every epoch),
// and a module whose weight changed shape in place has its ranges and int8 weights rebuilt on its next call.
// The tracked ranges are a buffer `quant_range` = [in_lo, in_hi, out_lo, out_hi] (NaN = never observed) registered
// on each Linear by prepare_qat(), so they are saved in checkpoints and restored with the best epoch's weights.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace cerebra {

class Model;

enum class QuantMode { kFloat, kObserve, kFakeQuant, kInt8 };

// ---- the hook --------------------------------------------------------------------------------------------------

// y = m(x) under m's quantisation mode. add_bias = false computes x Wᵀ only (e.g. Mamba's dt projection, whose
// bias is applied inside the scan).
torch::Tensor linear(const torch::nn::Linear& m, const torch::Tensor& x, bool add_bias = true);

// ---- fake quantisation primitives (differentiable, straight-through) -------------------------------------------

// Per-output-channel symmetric scales of a (out, in) weight: max|W_c| / (2^(bits-1) − 1), floored at 1e-12.
torch::Tensor weight_scales(const torch::Tensor& w, int bits);
// Fake-quantised weight through ATen's fake_quantize_per_channel_affine (fused kernel, straight-through grad).
torch::Tensor fake_quant_weight(const torch::Tensor& w, int bits);
// The same written with round/clamp and an explicit straight-through estimator (the reference).
torch::Tensor fake_quant_weight_ref(const torch::Tensor& w, int bits);

struct ActQuantParams {
  double scale = 1.0;
  int64_t zero_point = 0;
  int64_t quant_max = 255;  // quant_min is 0
};
// Asymmetric per-tensor parameters for the range [lo, hi] (widened to contain 0).
ActQuantParams activation_params(double lo, double hi, int bits);
// Fake-quantised activations through ATen's fake_quantize_per_tensor_affine, and the round/clamp reference.
torch::Tensor fake_quant_activation(const torch::Tensor& x, const ActQuantParams& p);
torch::Tensor fake_quant_activation_ref(const torch::Tensor& x, const ActQuantParams& p);

// ---- model-level control ---------------------------------------------------------------------------------------

struct QuantOptions {
  int bits = 8;       // 2..8
  double ema = 0.99;  // range tracking in QAT: r ← ema·r + (1 − ema)·batch range
};

// Registers the `quant_range` buffer (NaN) on every Linear that lacks it. Call before loading a QAT checkpoint
// and before training (the trainer snapshots buffers).
void prepare_qat(torch::nn::Module& model);
// A Linear that replaces another (structured pruning, include/cerebra/models/pruning.h) gets an unobserved range
// buffer when the replaced one had one: a QAT model keeps the same buffers through pruning, so a checkpoint of it
// loads into a model rebuilt with the pruned shapes.
void inherit_range_buffer(const torch::nn::LinearImpl& replaced, torch::nn::LinearImpl& replacement);
// Sets the mode of every Linear in `model` (creating state for modules that have none). kInt8 quantises the
// current fp32 weights (see enable_int8 for engine and activation options); use kFloat to switch quantisation off.
void set_quant_mode(torch::nn::Module& model, QuantMode mode, const QuantOptions& options = {});

// ---- int8 inference --------------------------------------------------------------------------------------------

struct Int8Options {
  std::string engine = "onednn";       // onednn | qnnpack
  std::string activations = "dynamic";  // dynamic | static
  int bits = 8;                         // weight precision held in the int8 containers
};

// Throws std::runtime_error naming the available engines when `engine` is not in this LibTorch build; selects it.
void require_quant_engine(const std::string& engine);
// Quantises every Linear of `model` (per-channel int8 weights, prepacked for the engine) and switches it to kInt8.
// Static activations need observed ranges (QAT or calibration with kObserve); a module without them runs dynamic.
void enable_int8(torch::nn::Module& model, const Int8Options& options);
// Writes the int8 weights, their scales and the ranges of every Linear in int8 mode, keyed by module path.
void save_int8_weights(const torch::nn::Module& model, const std::string& path);
// Loads them (after the fp32 checkpoint, whose Linear weights int8 inference then ignores) and switches those
// Linears to kInt8 with the given options. Errors name the file and the module on a missing entry or a shape
// mismatch.
void load_int8_weights(torch::nn::Module& model, const std::string& path, const Int8Options& options);

// What each Linear does, for reports: path -> {"mode", "calls_int8", "calls", "weight_dtype", "shape", ...}.
nlohmann::json quant_report(const torch::nn::Module& model);
// Resets the per-module call counters.
void reset_quant_counters(const torch::nn::Module& model);
// The packed int8 weight of a Linear in kInt8 mode, unpacked (a quantised tensor); undefined otherwise.
torch::Tensor packed_int8_weight(const torch::nn::Linear& m);

// ---- a run's quantisation (config keys of group "quant", parsed with the run's spec) ---------------------------

struct QuantSpec {
  bool qat = false;                      // fake quantisation during training
  int64_t qat_start_epoch = 1;           // E_q
  int bits = 8;                          // 2..8
  double ema = 0.99;                     // range tracking
  bool int8 = false;                     // the run's Linear layers run int8 (written by `cerebra export --int8`)
  std::string int8_engine = "onednn";    // onednn | qnnpack
  std::string int8_activations = "dynamic";
  QuantOptions options() const { return {bits, ema}; }
  Int8Options int8_options() const { return {int8_engine, int8_activations, bits}; }
};

// Before loading a checkpoint: registers the range buffers when the run used QAT.
void quant_before_load(torch::nn::Module& model, const QuantSpec& spec);
// After loading: QAT runs evaluate with fake quantisation; int8 runs load `run_dir`/model_int8.pt and run int8.
void quant_after_load(torch::nn::Module& model, const QuantSpec& spec, const std::string& run_dir);
// The "quant" section of summary.json (null when neither QAT nor int8 is configured).
nlohmann::json quant_summary(const torch::nn::Module& model, const QuantSpec& spec);

}  // namespace cerebra
