// Batch invariance of every registered mixer: a sequence's outputs do not depend on the other sequences or the
// padding in its batch (same sequence alone and padded into a mixed batch, outputs equal to float tolerance).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>

#include "cerebra/models/mixer.h"

namespace cerebra {
namespace {

struct Case {
  std::string mixer;
  bool causal = false;
  std::map<std::string, std::string> own;  // the mixer's own options
  std::string label;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.label; }

class BatchInvariance : public ::testing::TestWithParam<Case> {};

TEST_P(BatchInvariance, SequenceAloneEqualsSequenceInAPaddedMixedBatch) {
  const Case& c = GetParam();
  const std::string& name = c.mixer;
  const bool causal = c.causal;
  torch::manual_seed(7);
  MixerOptions o;
  o.d_model = 16;
  o.n_heads = 2;
  o.causal = causal;
  std::shared_ptr<SequenceMixer> mixer;
  try {
    mixer = make_mixer(name, with_own_options(name, o, c.own));
  } catch (const std::exception& e) {
    if (causal) GTEST_SKIP() << name << " has no causal form: " << e.what();
    throw;
  }
  mixer->eval();
  torch::NoGradGuard g;
  // Lengths chosen so the padded length (133) is not a multiple of any block or window size of the mixers.
  const std::vector<int64_t> lengths{45, 133, 6};
  const int64_t n_max = 133, d = o.d_model;
  auto x = torch::randn({3, n_max, d});
  auto mask = torch::zeros({3, n_max}, torch::kBool);
  for (int64_t b = 0; b < 3; ++b) {
    mask[b].slice(0, 0, lengths[b]).fill_(true);
    x[b].slice(0, lengths[b]).fill_(1e3);  // loud padding: any leak shows
  }
  auto batched = mixer->forward(x, mask);
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = lengths[b];
    auto alone = mixer->forward(x[b].slice(0, 0, n).unsqueeze(0), torch::Tensor());
    auto in_batch = batched[b].slice(0, 0, n).unsqueeze(0);
    ASSERT_TRUE(alone.isfinite().all().item<bool>()) << name;
    EXPECT_TRUE(torch::allclose(alone, in_batch, 1e-4, 1e-5))
        << name << (causal ? " (causal)" : "") << ": sequence " << b << " of length " << n
        << " differs alone and in the batch, max |diff| " << (alone - in_batch).abs().max().item<double>();
  }
}

// Every registered mixer with its defaults, non-causal and causal; Cerebra in every router mode and compressor.
std::vector<Case> every_mixer() {
  std::vector<Case> out;
  for (const auto& m : mixer_names())
    for (bool c : {false, true}) out.push_back({m, c, {}, m + (c ? "_causal" : "")});
  for (const char* unrouted : {"compressed", "skip"})
    out.push_back({"cerebra", false, {{"router_mode", "adaptive"}, {"unrouted", unrouted}, {"window", "16"}},
                   std::string("cerebra_adaptive_") + unrouted});
  for (const char* router : {"soft", "topk", "threshold"})
    for (const char* comp : {"conv", "attnpool", "hybrid"})
      out.push_back({"cerebra", false, {{"router_mode", router}, {"compressor", comp}, {"window", "16"},
                                        {"topk", "8"}},
                     std::string("cerebra_") + router + "_" + comp});
  return out;
}

INSTANTIATE_TEST_SUITE_P(EveryMixer, BatchInvariance, ::testing::ValuesIn(every_mixer()),
                         [](const auto& info) { return info.param.label; });

}  // namespace
}  // namespace cerebra
