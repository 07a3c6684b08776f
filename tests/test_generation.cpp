// Causal generation: every causal mixer's step() gives the rows of its full causal forward over the same tokens, in
// chunks of any size, including prompts longer than the mixer's window or kernel; the backbone and the language
// model step the same way (short convolutions, hybrids).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "cerebra/core/config.h"
#include "cerebra/data/task.h"
#include "cerebra/models/models.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"
#include "step_test_util.h"

namespace {
using namespace cerebra;

// Own options that make windows, kernels and chunks shorter than the test's sequences, so the state carries across.
const std::map<std::string, std::map<std::string, std::string>>& small_options() {
  static const std::map<std::string, std::map<std::string, std::string>> o{
      {"longformer", {{"window", "6"}, {"global_tokens", "2"}}},
      {"cnn", {{"kernel_size", "5"}, {"cnn_depth", "2"}}},
      {"cerebra", {{"window", "6"}, {"topk", "8"}, {"memory_block", "4"}, {"memory_max", "3"}}},
  };
  return o;
}

std::shared_ptr<SequenceMixer> causal_mixer(const std::string& name, int64_t d) {
  auto it = small_options().find(name);
  return test::causal_mixer(name, it == small_options().end() ? std::map<std::string, std::string>{} : it->second, d);
}

// The registered mixers that have a causal form.
std::vector<std::string> causal_mixer_names() {
  std::vector<std::string> out;
  for (const auto& name : mixer_names()) {
    try {
      if (causal_mixer(name, 16)->is_causal()) out.push_back(name);
    } catch (const std::exception&) {  // no causal form: refused at construction
    }
  }
  return out;
}

// Steps x (B, n, ...) through `step` in the given chunk sizes (summing to n) and concatenates the outputs.
template <class Step>
torch::Tensor in_chunks(const torch::Tensor& x, const std::vector<int64_t>& chunks, Step step) {
  std::vector<torch::Tensor> ys;
  int64_t at = 0;
  for (int64_t m : chunks) {
    ys.push_back(step(x.slice(1, at, at + m)));
    at += m;
  }
  EXPECT_EQ(at, x.size(1));
  return torch::cat(ys, 1);
}

const std::vector<int64_t> kChunks{1, 1, 17, 3, 1, 23};  // 46 tokens: single steps, and chunks across windows

TEST(Generation, TheCausalMixersAreTheExpectedOnes) {
  const auto names = causal_mixer_names();
  for (const char* expected : {"attention", "lstm", "cnn", "mamba", "mamba2", "rwkv", "s4d", "aft", "performer",
                               "longformer", "cerebra"})
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected << " has no causal form";
}

TEST(Generation, EveryCausalMixerStepsLikeItsFullForward) {
  torch::NoGradGuard no_grad;
  for (const auto& name : causal_mixer_names()) {
    SCOPED_TRACE(name);
    torch::manual_seed(3);
    auto mixer = causal_mixer(name, 16);
    test::expect_steps_like_forward(*mixer, torch::randn({2, 46, 16}), kChunks);
  }
}

// A recurrent state does not grow with the tokens seen; a key/value cache grows linearly.
TEST(Generation, RecurrentStatesStayTheSameSize) {
  torch::NoGradGuard no_grad;
  for (const auto& name : causal_mixer_names()) {
    SCOPED_TRACE(name);
    auto mixer = causal_mixer(name, 16);
    mixer->eval();
    EXPECT_TRUE(mixer->has_recurrent_step()) << name << " re-reads its whole prefix at every step";
    MixerState state;
    mixer->step(torch::randn({1, 30, 16}), state);
    const int64_t at30 = state.bytes();
    for (int i = 0; i < 20; ++i) mixer->step(torch::randn({1, 1, 16}), state);
    const int64_t at50 = state.bytes();
    EXPECT_GT(at30, 0);
    const bool cache = name == "attention" || name == "cerebra";  // aft's default (simple) keeps running sums
    if (cache)
      EXPECT_GT(at50, at30) << "a key/value cache grows with the context";
    else
      EXPECT_EQ(at50, at30) << "a recurrent state keeps its size";
  }
}

// The language model: embedding, positions, blocks with short convolutions and a hybrid of mixers, head.
std::shared_ptr<Model> char_lm(const std::string& model, const std::string& layers) {
  Config c;
  c.set("task", "janeausten", "test");
  c.set("model", model, "test");
  c.set("d_model", "16", "test");
  c.set("n_heads", "2", "test");
  c.set("n_layers", "2", "test");
  c.set("short_conv", "3", "test");
  if (!layers.empty()) c.set("layers", layers, "test");
  TaskInfo info;
  info.name = "janeausten";
  info.head = HeadKind::CausalLM;
  info.vocab = 256;
  info.n = 32;
  info.n_classes = 256;
  info.needs_causal = true;
  return make_model(parse_run_spec(c, false).model, info);
}

TEST(Generation, LanguageModelStepsLikeItsFullForward) {
  torch::NoGradGuard no_grad;
  for (const auto& [model, layers] : std::vector<std::pair<std::string, std::string>>{
           {"transformer", ""}, {"mamba", "mamba,attention"}, {"lstm", ""}}) {
    SCOPED_TRACE(model + " " + layers);
    torch::manual_seed(5);
    auto lm = char_lm(model, layers);
    lm->eval();
    auto tokens = torch::randint(0, 256, {2, 46}, torch::kInt64);
    Batch b;
    b.tokens = tokens;
    b.mask = torch::ones({2, 46}, torch::kBool);
    auto full = lm->forward(b);  // (B, n, vocab), positions beyond the training length included
    GenerationState state;
    auto stepped = in_chunks(tokens, kChunks, [&](const torch::Tensor& c) { return lm->step(c, state); });
    EXPECT_EQ(state.position, 46);
    EXPECT_TRUE(torch::allclose(stepped, full, 1e-4, 1e-4))
        << "max |step - forward| = " << (stepped - full).abs().max().item<double>();
  }
}

TEST(Generation, ModelsThatAreNotLanguageModelsRefuseToStep) {
  Config c;
  c.set("task", "copy", "test");
  c.set("d_model", "8", "test");
  c.set("n_heads", "2", "test");
  TaskInfo info;
  info.name = "copy";
  info.vocab = 16;
  info.n = 8;
  info.n_classes = 16;
  auto model = make_model(parse_run_spec(c, false).model, info);
  GenerationState state;
  EXPECT_THROW(model->step(torch::zeros({1, 1}, torch::kInt64), state), std::logic_error);
}

}  // namespace
