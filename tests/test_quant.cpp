// Quantisation: fake-quant primitives (round trip, straight-through gradients, own STE vs ATen), QAT training of
// models through the cerebra::linear hook, int8 inference through LibTorch's quantised engines (real quantised ops,
// close to the simulated quantised arithmetic and to fp32), the export/eval round trip and config errors.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "cerebra/train/spec.h"
#include "cerebra/core/config.h"
#include "cerebra/core/flop_counter.h"
#include "cerebra/cli/export_command.h"
#include "cerebra/models/models.h"
#include "cerebra/models/quant.h"
#include "cerebra/data/tabular.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace fs = std::filesystem;

namespace cerebra {
namespace {

fs::path temp_dir(const std::string& name) {
  auto p = fs::temp_directory_path() / ("cerebra_quant_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

std::vector<std::string> engines() {
  std::vector<std::string> out;
  const auto& s = at::globalContext().supportedQEngines();
  if (std::find(s.begin(), s.end(), at::QEngine::ONEDNN) != s.end()) out.push_back("onednn");
  if (std::find(s.begin(), s.end(), at::QEngine::QNNPACK) != s.end()) out.push_back("qnnpack");
  return out;
}

// Names of the dispatcher ops that run while `fn` runs.
template <typename F>
std::multiset<std::string> ops_during(F fn) {
  static thread_local std::multiset<std::string>* sink = nullptr;
  std::multiset<std::string> seen;
  sink = &seen;
  auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback([](const at::RecordFunction& rf) -> std::unique_ptr<at::ObserverContext> {
        if (sink) sink->insert(rf.name());
        return nullptr;
      }).scopes({at::RecordScope::FUNCTION}));
  fn();
  at::removeCallback(handle);
  sink = nullptr;
  return seen;
}

// ---- primitives ------------------------------------------------------------------------------------------------

TEST(QuantFakeQuant, WeightRoundTripWithinHalfAStepPerChannel) {
  torch::manual_seed(1);
  for (int bits : {8, 4}) {
    auto w = torch::randn({24, 40}) * torch::rand({24, 1}) * 3.0;  // channels of different magnitudes
    auto scale = weight_scales(w, bits);
    for (const auto& fq : {fake_quant_weight(w, bits), fake_quant_weight_ref(w, bits)}) {
      auto err = (fq - w).abs().amax(1);  // per channel
      EXPECT_TRUE((err <= scale * 0.5 * (1 + 1e-5)).all().item<bool>()) << "bits " << bits;
      // Values are integer multiples of the channel's scale within ±(2^(b-1)-1).
      auto q = fq / scale.unsqueeze(1);
      EXPECT_LT((q - q.round()).abs().max().item<float>(), 1e-3);
      EXPECT_LE(q.abs().max().item<float>(), static_cast<float>((1 << (bits - 1)) - 1) + 1e-3);
    }
  }
}

TEST(QuantFakeQuant, WeightGradientIsStraightThrough) {
  torch::manual_seed(2);
  auto c = torch::randn({8, 16});
  for (int impl = 0; impl < 2; ++impl) {
    auto w = torch::randn({8, 16}).requires_grad_(true);
    auto fq = impl == 0 ? fake_quant_weight(w, 8) : fake_quant_weight_ref(w, 8);
    (fq * c).sum().backward();
    EXPECT_TRUE(torch::equal(w.grad(), c)) << (impl == 0 ? "ATen" : "reference");
  }
}

TEST(QuantFakeQuant, OwnStraightThroughAgreesWithATen) {
  torch::manual_seed(3);
  for (int bits : {8, 6}) {
    auto w = torch::randn({32, 48});
    const double wscale = weight_scales(w, bits).max().item<double>();
    EXPECT_LE((fake_quant_weight(w, bits) - fake_quant_weight_ref(w, bits)).abs().max().item<double>(), 1e-6 * wscale);

    // Activations: a range that leaves some values outside, so both the clamp and the zero gradient are exercised.
    auto p = activation_params(-1.0, 2.5, bits);
    auto x1 = (torch::randn({64, 33}) * 2.0).requires_grad_(true);
    auto x2 = x1.detach().clone().requires_grad_(true);
    auto c = torch::randn({64, 33});
    auto a = fake_quant_activation(x1, p), b = fake_quant_activation_ref(x2, p);
    EXPECT_LE((a - b).abs().max().item<double>(), 1e-6 * p.scale);
    (a * c).sum().backward();
    (b * c).sum().backward();
    EXPECT_TRUE(torch::equal(x1.grad(), x2.grad()));
    // Inside the range the gradient is c, outside it is 0 (margins of 2 steps: the zero point's rounding moves the
    // representable range by up to half a step).
    const auto xd = x1.detach();
    auto strict_inside = xd.gt(-1.0 + 2 * p.scale).logical_and(xd.lt(2.5 - 2 * p.scale));
    EXPECT_TRUE(torch::equal(x1.grad().masked_select(strict_inside), c.masked_select(strict_inside)));
    auto outside = xd.lt(-1.0 - 2 * p.scale).logical_or(xd.gt(2.5 + 2 * p.scale));
    EXPECT_GT(outside.sum().item<int64_t>(), 0);
    EXPECT_EQ(x1.grad().masked_select(outside).abs().sum().item<float>(), 0.0f);
  }
}

TEST(QuantFakeQuant, ActivationRoundTripAndExactZero) {
  torch::manual_seed(4);
  auto p = activation_params(-0.7, 3.1, 8);
  EXPECT_EQ(p.quant_max, 255);
  EXPECT_NEAR(p.scale, 3.8 / 255.0, 1e-7);
  auto x = torch::rand({1000}) * 3.8 - 0.7;
  EXPECT_LE((fake_quant_activation(x, p) - x).abs().max().item<double>(), p.scale * 0.5 * (1 + 1e-4));
  EXPECT_EQ(fake_quant_activation(torch::zeros({3}), p).abs().max().item<float>(), 0.0f);  // 0 is representable
  // A range that excludes 0 is widened to contain it.
  auto q = activation_params(1.0, 2.0, 8);
  EXPECT_EQ(q.zero_point, 0);
  EXPECT_NEAR(q.scale, 2.0 / 255.0, 1e-7);
}

// ---- the hook on one Linear -------------------------------------------------------------------------------------

struct OneLinear : torch::nn::Module {
  OneLinear(int64_t in, int64_t out) { fc = register_module("fc", torch::nn::Linear(in, out)); }
  torch::Tensor forward(const torch::Tensor& x) { return cerebra::linear(fc, x); }
  torch::nn::Linear fc{nullptr};
};

TEST(QuantHook, FloatModeIsExactlyTheModule) {
  torch::manual_seed(5);
  OneLinear m(12, 7);
  auto x = torch::randn({5, 3, 12});
  EXPECT_TRUE(torch::equal(m.forward(x), m.fc->forward(x)));
  set_quant_mode(m, QuantMode::kFakeQuant);
  set_quant_mode(m, QuantMode::kFloat);
  EXPECT_TRUE(torch::equal(m.forward(x), m.fc->forward(x)));
}

TEST(QuantHook, FakeQuantTracksRangesWithEmaInTrainingOnly) {
  torch::manual_seed(6);
  OneLinear m(10, 6);
  prepare_qat(m);
  QuantOptions o;
  o.ema = 0.5;
  set_quant_mode(m, QuantMode::kFakeQuant, o);
  auto range = m.fc->named_buffers(false)["quant_range"];
  EXPECT_TRUE(std::isnan(range[0].item<float>()));
  m.eval();
  m.forward(torch::randn({4, 10}));
  EXPECT_TRUE(std::isnan(range[0].item<float>()));  // eval: no tracking
  m.train();
  auto x1 = torch::randn({4, 10});
  m.forward(x1);
  EXPECT_FLOAT_EQ(range[0].item<float>(), x1.min().item<float>());
  EXPECT_FLOAT_EQ(range[1].item<float>(), x1.max().item<float>());
  auto x2 = torch::randn({4, 10}) * 3;
  m.forward(x2);
  EXPECT_NEAR(range[1].item<float>(), 0.5 * x1.max().item<float>() + 0.5 * x2.max().item<float>(), 1e-5);
  // The output equals linear(fq_act(x), fq_w(W), b) with the updated range.
  m.eval();
  auto x3 = torch::randn({4, 10});
  auto p = activation_params(range[0].item<float>(), range[1].item<float>(), 8);
  auto want = torch::linear(fake_quant_activation(x3, p), fake_quant_weight(m.fc->weight, 8), m.fc->bias);
  EXPECT_TRUE(torch::allclose(m.forward(x3), want, 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(m.forward(x3), m.fc->forward(x3), 1e-6, 1e-6));  // quantisation is really applied
}

TEST(QuantHook, StateFollowsReplacedAndReshapedModules) {
  torch::manual_seed(7);
  OneLinear m(16, 8);
  prepare_qat(m);
  set_quant_mode(m, QuantMode::kFakeQuant);
  m.train();
  m.forward(torch::randn({4, 16}));
  // Pruning-style replacement by a smaller Linear: fresh state (and range buffer) at the next set_quant_mode.
  m.fc = m.replace_module("fc", torch::nn::Linear(16, 5));
  EXPECT_TRUE(torch::equal(m.forward(torch::ones({2, 16})), m.fc->forward(torch::ones({2, 16}))));  // no state yet
  set_quant_mode(m, QuantMode::kFakeQuant);
  auto x = torch::randn({4, 16});
  auto y = m.forward(x);
  EXPECT_EQ(y.size(1), 5);
  auto range = m.fc->named_buffers(false)["quant_range"];
  EXPECT_FLOAT_EQ(range[1].item<float>(), x.max().item<float>());
  // In-place shape change of the weight: ranges restart, int8 weights are rebuilt.
  {
    torch::NoGradGuard g;
    m.fc->weight.set_data(torch::randn({3, 16}));
    m.fc->bias.set_data(torch::randn({3}));
  }
  auto x2 = torch::randn({4, 16}) * 5;
  EXPECT_EQ(m.forward(x2).size(1), 3);
  EXPECT_FLOAT_EQ(range[1].item<float>(), x2.max().item<float>());
  for (const auto& e : engines()) {
    enable_int8(m, Int8Options{e, "dynamic", 8});
    torch::NoGradGuard g;
    EXPECT_EQ(m.forward(torch::randn({2, 16})).size(1), 3);
    {
      torch::NoGradGuard g2;
      m.fc->weight.set_data(torch::randn({2, 16}));
      m.fc->bias.set_data(torch::randn({2}));
    }
    auto xs = torch::randn({2, 16});
    auto ys = m.forward(xs);
    EXPECT_EQ(ys.size(1), 2);
    EXPECT_LT((ys - m.fc->forward(xs)).abs().max().item<float>(), 0.1);
    set_quant_mode(m, QuantMode::kFloat);
    m.fc->weight.set_data(torch::randn({3, 16}));
    m.fc->bias.set_data(torch::randn({3}));
  }
}

// Simulated int8 arithmetic in fp32: what a dynamic int8 Linear should compute.
torch::Tensor simulated_dynamic(const torch::nn::Linear& fc, const torch::Tensor& x) {
  auto p = activation_params(x.min().item<double>(), x.max().item<double>(), 8);
  return torch::linear(fake_quant_activation(x, p), fake_quant_weight(fc->weight, 8), fc->bias);
}

TEST(QuantInt8, LinearRunsQuantisedOpsAndMatchesSimulatedArithmetic) {
  ASSERT_FALSE(engines().empty()) << "this LibTorch build has neither ONEDNN nor QNNPACK";
  for (const auto& engine : engines()) {
    SCOPED_TRACE(engine);
    torch::manual_seed(8);
    OneLinear m(64, 48);
    auto x = torch::randn({32, 64});
    torch::NoGradGuard g;
    double counted_fp32 = 0, counted_int8 = 0;
    std::map<std::string, double> int8_ops;
    torch::Tensor fp32;
    {
      cerebra::FlopCounter counter;
      fp32 = m.forward(x);
      counted_fp32 = counter.total();
    }
    enable_int8(m, Int8Options{engine, "dynamic", 8});
    torch::Tensor y;
    std::multiset<std::string> ops;
    {
      cerebra::FlopCounter counter;
      ops = ops_during([&] { y = m.forward(x); });
      counted_int8 = counter.total();
      int8_ops = counter.by_op();
    }
    EXPECT_EQ(ops.count("quantized::linear_dynamic"), 1u);
    EXPECT_EQ(ops.count("aten::linear") + ops.count("aten::addmm") + ops.count("aten::mm") + ops.count("aten::matmul"),
              0u);
    // The FLOP counter sees the quantised GEMM: the same 2·rows·in·out as the fp32 Linear's addmm.
    EXPECT_DOUBLE_EQ(counted_fp32, 2.0 * 32 * 64 * 48);
    EXPECT_DOUBLE_EQ(counted_int8, counted_fp32);
    EXPECT_EQ(int8_ops.count("kernel:int8_linear"), 1u);
    auto w = packed_int8_weight(m.fc);
    ASSERT_TRUE(w.defined());
    EXPECT_TRUE(w.is_quantized());
    EXPECT_EQ(w.scalar_type(), torch::kQInt8);
    EXPECT_EQ(w.qscheme(), torch::kPerChannelAffine);
    // Not fp32 in disguise: it differs from fp32 by quantisation noise, and agrees with the simulated arithmetic
    // far more closely than with fp32.
    const double to_fp32 = (y - fp32).abs().max().item<double>();
    const double to_sim = (y - simulated_dynamic(m.fc, x)).abs().max().item<double>();
    EXPECT_GT(to_fp32, 1e-4);
    EXPECT_LT(to_sim, 0.2 * to_fp32) << "to_sim " << to_sim << " to_fp32 " << to_fp32;
    EXPECT_LT(to_fp32, 0.05 * fp32.abs().max().item<double>());
    // Gradients are refused with a clear error.
    torch::AutoGradMode on(true);
    auto xg = x.clone().requires_grad_(true);
    EXPECT_THROW(m.forward(xg), c10::Error);
  }
}

TEST(QuantInt8, StaticActivationsUseTrackedRanges) {
  for (const auto& engine : engines()) {
    SCOPED_TRACE(engine);
    torch::manual_seed(9);
    OneLinear m(32, 24);
    auto calib = torch::randn({256, 32});
    prepare_qat(m);
    set_quant_mode(m, QuantMode::kObserve);
    torch::NoGradGuard g;
    m.forward(calib);
    enable_int8(m, Int8Options{engine, "static", 8});
    auto x = torch::randn({16, 32}).clamp(-2, 2);
    torch::Tensor y;
    auto ops = ops_during([&] { y = m.forward(x); });
    EXPECT_EQ(ops.count("quantized::linear"), 1u);
    EXPECT_EQ(ops.count("quantized::linear_dynamic"), 0u);
    auto r = m.fc->named_buffers(false)["quant_range"];
    auto pin = activation_params(r[0].item<float>(), r[1].item<float>(), 8);
    auto pout = activation_params(r[2].item<float>(), r[3].item<float>(), 8);
    auto sim = fake_quant_activation(
        torch::linear(fake_quant_activation(x, pin), fake_quant_weight(m.fc->weight, 8), m.fc->bias), pout);
    const double to_sim = (y - sim).abs().max().item<double>();
    EXPECT_LE(to_sim, 1.01 * pout.scale) << "at most one output step apart";
  }
}

TEST(QuantInt8, EngineAvailabilityIsCheckedWithAClearError) {
  try {
    require_quant_engine("tpu8");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown quantised engine 'tpu8'"), std::string::npos) << e.what();
  }
  const auto& s = at::globalContext().supportedQEngines();
  if (std::find(s.begin(), s.end(), at::QEngine::FBGEMM) == s.end()) {
    try {
      require_quant_engine("fbgemm");
      FAIL() << "expected an error";
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("'fbgemm' is not available"), std::string::npos) << msg;
      EXPECT_NE(msg.find("available:"), std::string::npos) << msg;
    }
  }
}

// ---- models ----------------------------------------------------------------------------------------------------

struct FixtureData {
  TabularData d;
  Split split;
  InputSchema schema;
};

FixtureData load_fixture(const Config& c) {
  FixtureData f;
  auto src = open_tabular(resolve_table(parse_run_spec(c).task), 0);
  f.split = make_split(static_cast<int64_t>(src.rows.size()), c.get_float("val_fraction"), c.get_float("test_fraction"),
                       static_cast<uint64_t>(c.get_int("seed")));
  f.d = encode_tabular(src, f.split.train);
  f.schema.n_numeric = static_cast<int64_t>(f.d.numeric_names.size());
  f.schema.cardinalities = f.d.cardinalities;
  return f;
}

Batch fixture_batch(const TabularData& d, const std::vector<int64_t>& rows) {
  auto idx = torch::tensor(rows, torch::kInt64);
  Batch b;
  b.num = d.num.index_select(0, idx);
  b.cat = d.cat.index_select(0, idx);
  b.y = d.y.index_select(0, idx);
  return b;
}

TEST(QuantQat, ModelsStillTrainWithFakeQuantisation) {
  for (const std::string name : {"transformer", "cerebra", "mlp"}) {
    SCOPED_TRACE(name);
    Config c = test::fixture_config(name);
    c.set("dropout", "0", "test");
    c.set("topk", "3", "test");        // cerebra: 3 of 7 tokens on the full path, so the compressed path runs too
    c.set("rec_weight", "0.1", "test");  // and the compressor's reconstruction (its `up` Linear)
    auto f = load_fixture(c);
    torch::manual_seed(10);
    auto model = make_tabular_model(parse_run_spec(c).model, f.schema);
    prepare_qat(*model);
    set_quant_mode(*model, QuantMode::kFakeQuant);
    model->train();
    std::vector<int64_t> rows(f.split.train.begin(), f.split.train.begin() + 128);
    Batch b = fixture_batch(f.d, rows);
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(3e-3));
    double first = 0, last = 0;
    for (int step = 0; step < 25; ++step) {
      opt.zero_grad();
      auto loss = torch::mse_loss(model->forward(b).reshape({-1}), b.y);
      loss.backward();
      opt.step();
      (step == 0 ? first : last) = loss.item<double>();
    }
    EXPECT_LT(last, 0.8 * first) << "first " << first << " last " << last;
    // Every Linear saw activations and is in fake-quant mode.
    auto report = quant_report(*model);
    for (const auto& [path, l] : report.items()) {
      EXPECT_EQ(l["mode"], "fake_quant") << path;
      EXPECT_TRUE(l["range"][0].is_number()) << path << " never observed";
    }
  }
}

// Train (QAT or fp32) on the fixture, export int8, check accuracy against fp32 and the eval round trip.
void export_round_trip(const std::string& model, bool qat, const std::string& activations) {
  SCOPED_TRACE(model + (qat ? " qat " : " fp32 ") + activations);
  Config c = test::fixture_config(model);
  c.set("epochs", "4", "test");
  c.set("topk", "3", "test");  // cerebra: both paths run
  c.set("qat", qat ? "true" : "false", "test");
  c.set("qat_start_epoch", "2", "test");
  const fs::path run = temp_dir(model + (qat ? "_qat" : "_fp32") + "_" + activations);
  nlohmann::json s = train_run(parse_run_spec(c), run.string(), RunOptions{true});
  if (qat) {
    ASSERT_TRUE(s.contains("quant"));
    EXPECT_EQ(s["quant"]["linear_layers_fake_quant"], s["quant"]["linear_layers"]);
    std::ifstream metrics(run / "metrics.jsonl");
    std::string line;
    std::vector<bool> flags;
    while (std::getline(metrics, line)) flags.push_back(nlohmann::json::parse(line)["qat"].get<bool>());
    ASSERT_EQ(flags.size(), 4u);
    EXPECT_FALSE(flags[0]);
    EXPECT_TRUE(flags[1] && flags[3]);
    EXPECT_GE(s["training"]["best_epoch"].get<int64_t>(), 2);
    // A QAT run re-evaluates with fake quantisation: identical metrics.
    EXPECT_TRUE(eval_run(run.string(), RunOptions{true})["matches_summary"].get<bool>());
  }
  for (const auto& engine : engines()) {
    Int8ExportOptions o;
    o.run_dir = run.string();
    o.out_dir = (run.string() + "-" + engine);
    o.engine = engine;
    o.activations = activations;
    o.repeats = 1;
    o.quiet = true;
    nlohmann::json r = export_int8(o);
    // Every call of every Linear ran int8. Only the Cerebra compressor's reconstruction Linear (`up`, a training-only
    // loss) is never called at inference.
    int64_t called = 0;
    for (const auto& [path, l] : r["layers"].items()) {
      EXPECT_EQ(l["calls_int8"], l["calls"]) << path;
      EXPECT_EQ(l["weight_dtype"], "QInt8") << path;
      const bool unused_at_inference = path.size() >= 13 && path.substr(path.size() - 13) == "compressor.up";
      if (!unused_at_inference) EXPECT_GT(l["calls"].get<int64_t>(), 0) << path;
      called += l["calls"].get<int64_t>() > 0;
    }
    EXPECT_EQ(r["linear_layers_int8"].get<int64_t>(), called);
    EXPECT_EQ(r["linear_layers_static"].get<int64_t>(), activations == "static" ? called : 0);
    // Documented bound: int8 predictions within 0.1 target standard deviations (RMS) of fp32 on the fixture, and
    // the test RMSE within 5% of fp32's.
    EXPECT_LT(r["prediction_rmse_vs_fp32_std_units"].get<double>(), 0.1);
    const double fp32 = r["accuracy"]["fp32"]["test_rmse"].get<double>();
    const double int8 = r["accuracy"]["int8"]["test_rmse"].get<double>();
    EXPECT_LT(std::abs(int8 - fp32), 0.05 * fp32) << "fp32 " << fp32 << " int8 " << int8;
    EXPECT_TRUE(r["eval_reproduces_int8_metrics"].get<bool>());
    // `cerebra eval` on the export: int8, same metrics as its summary.
    nlohmann::json ev = eval_run(o.out_dir, RunOptions{true});
    EXPECT_TRUE(ev["matches_summary"].get<bool>());
    EXPECT_TRUE(ev["quant"]["int8"].get<bool>());
    EXPECT_EQ(ev["quant"]["linear_layers_int8"], r["linear_layers"]);  // every Linear is set to int8
    Config exported;
    exported.load_yaml_file((fs::path(o.out_dir) / "config.yaml").string());
    EXPECT_TRUE(exported.get_bool("int8"));
    EXPECT_EQ(exported.get_string("int8_engine"), engine);
    fs::remove_all(o.out_dir);
  }
  fs::remove_all(run);
}

TEST(QuantExport, TransformerQatDynamic) { export_round_trip("transformer", true, "dynamic"); }
TEST(QuantExport, CerebraQatStatic) { export_round_trip("cerebra", true, "static"); }
TEST(QuantExport, MlpFp32CalibratedStatic) { export_round_trip("mlp", false, "static"); }

TEST(QuantExport, ErrorsNameTheProblem) {
  Config c = test::fixture_config("transformer");
  c.set("int8", "true", "test");
  EXPECT_THROW(train_run(parse_run_spec(c), temp_dir("bad_int8").string(), RunOptions{true}), ConfigError);
  Config c2 = test::fixture_config("ols");
  c2.set("qat", "true", "test");
  EXPECT_THROW(parse_run_spec(c2), ConfigError);
  Config c3 = test::fixture_config("transformer");
  c3.set("qat", "true", "test");
  c3.set("qat_start_epoch", "9", "test");  // > epochs (3)
  try {
    parse_run_spec(c3);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("qat_start_epoch"), std::string::npos);
  }
  Config c4 = test::fixture_config("transformer");
  c4.set("qat_bits", "9", "test");
  EXPECT_THROW(parse_run_spec(c4), ConfigError);
  Int8ExportOptions o;
  o.run_dir = temp_dir("missing").string();
  EXPECT_THROW(export_int8(o), std::runtime_error);
}

TEST(QuantExport, Int8WeightsFileMismatchIsReported) {
  torch::manual_seed(11);
  OneLinear a(8, 4), b(8, 6);
  enable_int8(a, Int8Options{engines().at(0), "dynamic", 8});
  const fs::path p = temp_dir("weights");
  fs::create_directories(p);
  save_int8_weights(a, (p / "w.pt").string());
  try {
    load_int8_weights(b, (p / "w.pt").string(), Int8Options{engines().at(0), "dynamic", 8});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("Linear 'fc'"), std::string::npos) << e.what();
  }
  load_int8_weights(a, (p / "w.pt").string(), Int8Options{engines().at(0), "dynamic", 8});
  fs::remove_all(p);
}

}  // namespace
}  // namespace cerebra
