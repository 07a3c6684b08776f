// Streaming synthetic tasks: MQAR layout and answers checked by an independent solver, the power-law gap
// distribution against its analytic probabilities (first and second draws), determinism and freshness of the
// counter-based keys, disjoint splits, selective copy and induction heads answers, and spec validation messages.
#include "cerebra/data/synthetic_stream.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

using cerebra::InductionHeadsSpec;
using cerebra::MqarSpec;
using cerebra::SelectiveCopySpec;
using cerebra::StreamExample;
using cerebra::stream_key;
namespace st = cerebra::stream;

namespace {

// The message of the std::invalid_argument `f` throws; "" when it throws none (other exceptions fail the test).
std::string invalid_argument_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected std::invalid_argument, got: " << e.what();
    return e.what();
  }
  return "";
}

std::vector<int64_t> answer_positions(const StreamExample& e) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < e.targets.size(); ++i)
    if (e.targets[i] != st::kIgnore) out.push_back(static_cast<int64_t>(i));
  return out;
}

// Pearson's chi-square statistic of observed counts against probabilities p (n = total count).
double chi_square(const std::vector<int64_t>& counts, const std::vector<double>& p, int64_t n) {
  double chi2 = 0;
  for (size_t g = 0; g < p.size(); ++g) {
    const double expected = p[g] * static_cast<double>(n);
    chi2 += (counts[g] - expected) * (counts[g] - expected) / expected;
  }
  return chi2;
}

// Checks one MQAR example against the spec by re-deriving every answer from the context.
void check_mqar(const MqarSpec& s, const StreamExample& e) {
  const int64_t T = s.seq_len, V = s.vocab_size, P = s.num_kv_pairs, Q = cerebra::mqar_num_queries(s);
  const int64_t mid = cerebra::mqar_first_value(V);
  ASSERT_EQ(static_cast<int64_t>(e.tokens.size()), T);
  ASSERT_EQ(static_cast<int64_t>(e.targets.size()), T);
  std::set<int64_t> keys, values;
  for (int64_t i = 0; i < P; ++i) {
    const int64_t k = e.tokens[2 * i], v = e.tokens[2 * i + 1];
    ASSERT_GE(k, st::kFirstData);
    ASSERT_LT(k, mid) << "a key outside the lower half";
    ASSERT_GE(v, mid) << "a value outside the upper half";
    ASSERT_LT(v, V);
    keys.insert(k);
    values.insert(v);
    ASSERT_EQ(e.targets[2 * i], st::kIgnore);
    ASSERT_EQ(e.targets[2 * i + 1], st::kIgnore);
  }
  ASSERT_EQ(static_cast<int64_t>(keys.size()), P) << "keys repeat within the context";
  ASSERT_EQ(static_cast<int64_t>(values.size()), P) << "values repeat within the context";

  const std::vector<int64_t> answers = answer_positions(e);
  ASSERT_EQ(static_cast<int64_t>(answers.size()), Q);
  std::set<int64_t> queried;
  for (int64_t pos : answers) {
    ASSERT_GE(pos, 2 * P) << "an answer inside the context";
    ASSERT_EQ((pos - 2 * P) % 2, 0) << "a query off its two-token slot";
    int64_t occurrences = 0, value = -1;
    for (int64_t i = 0; i < P; ++i)
      if (e.tokens[2 * i] == e.tokens[pos]) {
        ++occurrences;
        value = e.tokens[2 * i + 1];
      }
    ASSERT_EQ(occurrences, 1) << "a query key must occur exactly once as a key of the context";
    ASSERT_EQ(e.targets[pos], value) << "the target must be the value paired with the query key";
    queried.insert(e.tokens[pos]);
  }
  ASSERT_EQ(static_cast<int64_t>(queried.size()), Q) << "a pair is queried twice";

  for (int64_t pos = 2 * P; pos < T; ++pos) {
    if (e.targets[pos] != st::kIgnore) continue;
    if (s.random_non_queries) {
      ASSERT_GE(e.tokens[pos], st::kFirstData);
      ASSERT_LT(e.tokens[pos], V);
    } else {
      ASSERT_EQ(e.tokens[pos], st::kNoise);
    }
  }
}

// Gap (in two-token slots from the end of the context) of the query of context pair i.
int64_t gap_of_pair(const MqarSpec& s, const StreamExample& e, int64_t pair) {
  for (int64_t pos = 2 * s.num_kv_pairs; pos < s.seq_len; ++pos)
    if (e.targets[pos] != st::kIgnore && e.tokens[pos] == e.tokens[2 * pair]) return (pos - 2 * s.num_kv_pairs) / 2;
  return -1;
}

}  // namespace

TEST(SyntheticStreamMqar, LayoutAnswersAndHalves) {
  MqarSpec small;
  small.seq_len = 96;
  small.vocab_size = 44;  // 20 keys, 20 values
  small.num_kv_pairs = 12;
  small.num_queries = 7;
  small.random_non_queries = false;
  MqarSpec zoology;  // Zoology's defaults: T 64, V 8192, 8 pairs all queried, random filler
  MqarSpec tight;    // every key token used, every query slot used
  tight.seq_len = 40;
  tight.vocab_size = 4 + 2 * 10;
  tight.num_kv_pairs = 10;
  for (const MqarSpec& s : {small, zoology, tight})
    for (int64_t i = 0; i < 300; ++i) {
      const StreamExample e = cerebra::make_mqar(s, stream_key(7, st::kTrain, i / 16, i % 16));
      check_mqar(s, e);
      if (HasFatalFailure()) return;
    }
  // Filler is random (not one repeated token) when random_non_queries.
  const StreamExample e = cerebra::make_mqar(zoology, stream_key(1, st::kTrain, 0, 0));
  std::set<int64_t> filler;
  for (int64_t pos = 16; pos < 64; ++pos)
    if (e.targets[pos] == st::kIgnore) filler.insert(e.tokens[pos]);
  EXPECT_GT(filler.size(), 20u);
}

TEST(SyntheticStreamMqar, LargeVocabularyUsesBothHalvesFully) {
  MqarSpec s;
  s.seq_len = 1024;
  s.vocab_size = 8192;
  s.num_kv_pairs = 128;
  s.num_queries = 64;
  const int64_t mid = cerebra::mqar_first_value(8192);
  EXPECT_EQ(mid, 4 + 8188 / 2);
  int64_t min_key = 1 << 30, max_key = 0, min_value = 1 << 30, max_value = 0;
  for (int64_t i = 0; i < 40; ++i) {
    const StreamExample e = cerebra::make_mqar(s, stream_key(3, st::kTrain, i, 0));
    check_mqar(s, e);
    if (HasFatalFailure()) return;
    for (int64_t p = 0; p < s.num_kv_pairs; ++p) {
      min_key = std::min(min_key, e.tokens[2 * p]);
      max_key = std::max(max_key, e.tokens[2 * p]);
      min_value = std::min(min_value, e.tokens[2 * p + 1]);
      max_value = std::max(max_value, e.tokens[2 * p + 1]);
    }
  }
  EXPECT_LT(min_key, 4 + 20);
  EXPECT_GT(max_key, mid - 20);
  EXPECT_LT(min_value, mid + 20);
  EXPECT_GT(max_value, 8192 - 20);
}

TEST(SyntheticStreamMqar, PowerLawProbabilities) {
  const std::vector<double> p = st::power_law_probs(100, 0.01);
  double total = 0;
  for (double v : p) total += v;
  EXPECT_NEAR(total, 1.0, 1e-12);
  for (int64_t g : {1, 9, 99}) EXPECT_NEAR(p[g] / p[0], std::pow(g + 1.0, 0.01 - 1), 1e-12);
  for (double v : st::power_law_probs(10, 1.0)) EXPECT_NEAR(v, 0.1, 1e-12);
}

// Queries of pair 0 and pair 1 sit at the first and second gaps drawn without replacement from p(g) ∝ (g+1)^(a-1):
// P(first = g) = p(g), P(second = g) = sum over f != g of p(f) p(g) / (1 - p(f)).
TEST(SyntheticStreamMqar, GapsFollowThePowerLaw) {
  MqarSpec s;
  s.num_kv_pairs = 4;
  s.seq_len = 2 * 4 + 2 * 40;  // 40 gaps
  s.vocab_size = 64;
  s.random_non_queries = false;
  const int64_t space = cerebra::mqar_gap_space(s), n = 20000;
  ASSERT_EQ(space, 40);
  const std::vector<double> p = st::power_law_probs(space, s.power_a);
  std::vector<double> p_second(static_cast<size_t>(space), 0.0);
  for (int64_t f = 0; f < space; ++f)
    for (int64_t g = 0; g < space; ++g)
      if (g != f) p_second[g] += p[f] * p[g] / (1 - p[f]);

  std::vector<int64_t> first(static_cast<size_t>(space)), second(static_cast<size_t>(space)),
      any(static_cast<size_t>(space));
  for (int64_t i = 0; i < n; ++i) {
    const StreamExample e = cerebra::make_mqar(s, stream_key(11, st::kTrain, i, 0));
    ++first[gap_of_pair(s, e, 0)];
    ++second[gap_of_pair(s, e, 1)];
    for (int64_t pair = 0; pair < 4; ++pair) ++any[gap_of_pair(s, e, pair)];
  }
  // 39 degrees of freedom: mean 39, sd 8.8; a uniform or mis-paired draw gives thousands.
  EXPECT_LT(chi_square(first, p, n), 90.0);
  EXPECT_LT(chi_square(second, p_second, n), 90.0);
  EXPECT_GT(chi_square(first, p_second, n), 200.0) << "first and second draws should be distinguishable";
  // Shape: small gaps far more frequent than large gaps.
  int64_t small = 0, large = 0;
  for (int64_t g = 0; g < 4; ++g) small += any[g];
  for (int64_t g = space - 4; g < space; ++g) large += any[g];
  EXPECT_GT(small, 5 * large);
  EXPECT_GT(first[0], 20 * first[space - 1]);
}

TEST(SyntheticStreamMqar, PowerAOneIsUniform) {
  const int64_t space = 25, n = 25000;
  std::vector<int64_t> counts(static_cast<size_t>(space));
  st::StreamRng rng(stream_key(5, st::kTrain, 0, 0));
  for (int64_t i = 0; i < n; ++i) ++counts[st::power_law_gaps(space, 1, 1.0, rng)[0]];
  EXPECT_LT(chi_square(counts, std::vector<double>(space, 1.0 / space), n), 60.0);  // 24 degrees of freedom
  // All gaps drawn: a permutation.
  std::vector<int64_t> all = st::power_law_gaps(space, space, 0.01, rng);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), static_cast<size_t>(space));
}

TEST(SyntheticStreamKeys, DeterministicAndFreshEveryStep) {
  MqarSpec mqar;
  SelectiveCopySpec copy;
  copy.seq_len = 256;
  InductionHeadsSpec induction;
  const uint64_t key = stream_key(42, st::kTrain, 3, 5);
  EXPECT_EQ(key, stream_key(42, st::kTrain, 3, 5));
  EXPECT_EQ(cerebra::make_mqar(mqar, key).tokens, cerebra::make_mqar(mqar, key).tokens);
  EXPECT_EQ(cerebra::make_mqar(mqar, key).targets, cerebra::make_mqar(mqar, key).targets);
  EXPECT_EQ(cerebra::make_selective_copy(copy, key).tokens, cerebra::make_selective_copy(copy, key).tokens);
  EXPECT_EQ(cerebra::make_induction_heads(induction, key).tokens, cerebra::make_induction_heads(induction, key).tokens);

  // Examples at different steps (same index) and at different indices (same step) differ.
  std::set<std::vector<int64_t>> seen;
  for (int64_t step = 0; step < 100; ++step)
    for (int64_t index = 0; index < 4; ++index) {
      EXPECT_TRUE(seen.insert(cerebra::make_mqar(mqar, stream_key(42, st::kTrain, step, index)).tokens).second);
      EXPECT_TRUE(seen.insert(cerebra::make_selective_copy(copy, stream_key(42, st::kTrain, step, index)).tokens)
                      .second);
    }
  // Another seed gives other examples.
  EXPECT_NE(cerebra::make_mqar(mqar, stream_key(43, st::kTrain, 3, 5)).tokens, cerebra::make_mqar(mqar, key).tokens);
}

TEST(SyntheticStreamKeys, ValidationAndTestAreApartFromTraining) {
  const uint64_t seed = 2024;
  std::set<uint64_t> train;
  for (int64_t step = 0; step < 200; ++step)
    for (int64_t index = 0; index < 64; ++index) train.insert(stream_key(seed, st::kTrain, step, index));
  EXPECT_EQ(train.size(), 200u * 64u);
  std::set<uint64_t> val, test;
  for (int64_t i = 0; i < 2000; ++i) {
    val.insert(stream_key(seed, st::kVal, 0, i));
    test.insert(stream_key(seed, st::kTest, 0, i));
  }
  EXPECT_EQ(val.size(), 2000u);
  EXPECT_EQ(test.size(), 2000u);
  for (uint64_t k : val) EXPECT_EQ(train.count(k) + test.count(k), 0u);
  for (uint64_t k : test) EXPECT_EQ(train.count(k), 0u);
  // The fixed sets are not training examples either (tokens compared).
  MqarSpec s;
  std::set<std::vector<int64_t>> train_tokens;
  for (int64_t step = 0; step < 50; ++step)
    for (int64_t index = 0; index < 8; ++index)
      train_tokens.insert(cerebra::make_mqar(s, stream_key(seed, st::kTrain, step, index)).tokens);
  for (int64_t i = 0; i < 400; ++i) {
    EXPECT_EQ(train_tokens.count(cerebra::make_mqar(s, stream_key(seed, st::kVal, 0, i)).tokens), 0u);
    EXPECT_EQ(train_tokens.count(cerebra::make_mqar(s, stream_key(seed, st::kTest, 0, i)).tokens), 0u);
  }
  EXPECT_NE(invalid_argument_of([] { stream_key(1, -1, 0, 0); }).find("split"), std::string::npos);
  EXPECT_NE(invalid_argument_of([] { stream_key(1, 0, -1, 0); }).find("step"), std::string::npos);
  EXPECT_NE(invalid_argument_of([] { stream_key(1, 0, 0, -1); }).find("index"), std::string::npos);
}

TEST(SyntheticStreamSelectiveCopy, TargetsAreTheDataTokensInOrder) {
  SelectiveCopySpec mamba;  // Mamba §4.1: T 4096, vocab 16, 16 data tokens
  SelectiveCopySpec small;
  small.seq_len = 40;
  small.vocab_size = 9;
  small.num_data = 10;
  SelectiveCopySpec tight;  // the region is all data
  tight.seq_len = 12;
  tight.num_data = 6;
  for (const SelectiveCopySpec& s : {mamba, small, tight}) {
    const int64_t n = s.num_data, region = s.seq_len - n;
    std::set<int64_t> first_positions;
    for (int64_t i = 0; i < (s.seq_len > 1000 ? 20 : 300); ++i) {
      const StreamExample e = cerebra::make_selective_copy(s, stream_key(9, st::kTrain, i, 0));
      ASSERT_EQ(static_cast<int64_t>(e.tokens.size()), s.seq_len);
      std::vector<int64_t> data, where;
      for (int64_t pos = 0; pos < region; ++pos) {
        ASSERT_EQ(e.targets[pos], st::kIgnore);
        if (e.tokens[pos] == st::kNoise) continue;
        ASSERT_GE(e.tokens[pos], st::kFirstData);
        ASSERT_LT(e.tokens[pos], s.vocab_size);
        data.push_back(e.tokens[pos]);
        where.push_back(pos);
      }
      ASSERT_EQ(static_cast<int64_t>(data.size()), n);
      first_positions.insert(where[0]);
      std::vector<int64_t> answers;
      for (int64_t pos = region; pos < s.seq_len; ++pos) {
        ASSERT_EQ(e.tokens[pos], st::kBlank);
        answers.push_back(e.targets[pos]);
      }
      ASSERT_EQ(answers, data);
    }
    if (region > n) {
      EXPECT_GT(first_positions.size(), 3u) << "data positions should be random";
    }
  }
}

TEST(SyntheticStreamInductionHeads, TargetIsTheTokenAfterTheTrigger) {
  InductionHeadsSpec mamba;  // T 256, vocab 16, one trigger, one query
  InductionHeadsSpec multi;
  multi.seq_len = 64;
  multi.vocab_size = 12;
  multi.num_triggers = 2;
  multi.num_queries = 3;
  InductionHeadsSpec tight;
  tight.seq_len = 2 * 2 * 3 + 2;
  tight.vocab_size = 7;
  tight.num_triggers = 3;
  tight.num_queries = 2;
  for (const InductionHeadsSpec& s : {mamba, multi, tight}) {
    const int64_t Q = s.num_queries, context = s.seq_len - Q;
    for (int64_t i = 0; i < 300; ++i) {
      const StreamExample e = cerebra::make_induction_heads(s, stream_key(13, st::kTrain, i, 0));
      ASSERT_EQ(static_cast<int64_t>(e.tokens.size()), s.seq_len);
      std::vector<int64_t> count(static_cast<size_t>(Q), 0);
      for (int64_t pos = 0; pos < context; ++pos) {
        ASSERT_EQ(e.targets[pos], st::kIgnore);
        const int64_t t = e.tokens[pos];
        ASSERT_GE(t, st::kFirstData);
        ASSERT_LT(t, s.vocab_size);
        if (t < st::kFirstData + Q) {
          ++count[t - st::kFirstData];
          ASSERT_LT(pos + 1, context) << "a trigger without its follower";
          ASSERT_GE(e.tokens[pos + 1], st::kFirstData + Q) << "a trigger followed by a trigger";
        }
      }
      for (int64_t j = 0; j < Q; ++j) ASSERT_EQ(count[j], s.num_triggers);
      std::set<int64_t> queried;
      for (int64_t pos = context; pos < s.seq_len; ++pos) {
        const int64_t trigger = e.tokens[pos];
        ASSERT_GE(trigger, st::kFirstData);
        ASSERT_LT(trigger, st::kFirstData + Q);
        queried.insert(trigger);
        // The induction-head answer: every earlier occurrence of the trigger was followed by the target.
        for (int64_t q = 0; q + 1 < context; ++q)
          if (e.tokens[q] == trigger) {
            ASSERT_EQ(e.tokens[q + 1], e.targets[pos]);
          }
      }
      ASSERT_EQ(static_cast<int64_t>(queried.size()), Q);
    }
  }
}

TEST(SyntheticStreamValidation, BadSpecsNameTheParameter) {
  auto mqar_error = [](const std::function<void(MqarSpec&)>& edit) {
    MqarSpec s;
    edit(s);
    const std::string a = invalid_argument_of([&] { cerebra::validate_mqar(s); });
    const std::string b = invalid_argument_of([&] { cerebra::make_mqar(s, 1); });
    EXPECT_EQ(a, b) << "make_mqar validates its spec";
    return a;
  };
  EXPECT_EQ(mqar_error([](MqarSpec&) {}), "");
  EXPECT_NE(mqar_error([](MqarSpec& s) { s.num_kv_pairs = 0; }).find("num_kv_pairs"), std::string::npos);
  EXPECT_NE(mqar_error([](MqarSpec& s) { s.num_queries = 9; }).find("num_queries"), std::string::npos);
  EXPECT_NE(mqar_error([](MqarSpec& s) { s.num_queries = -1; }).find("num_queries"), std::string::npos);
  EXPECT_NE(mqar_error([](MqarSpec& s) { s.vocab_size = 4 + 2 * 8 - 1; }).find("vocab_size"), std::string::npos);
  EXPECT_EQ(mqar_error([](MqarSpec& s) { s.vocab_size = 4 + 2 * 8; }), "");
  EXPECT_NE(mqar_error([](MqarSpec& s) { s.seq_len = 2 * 8 + 2 * 8 - 1; }).find("seq_len"), std::string::npos);
  EXPECT_NE(mqar_error([](MqarSpec& s) { s.power_a = 0; }).find("power_a"), std::string::npos);
  EXPECT_NE(mqar_error([](MqarSpec& s) { s.power_a = std::numeric_limits<double>::quiet_NaN(); }).find("power_a"),
            std::string::npos);
  EXPECT_NE(mqar_error([](MqarSpec& s) { s.seq_len = 20; }).find("mqar:"), std::string::npos);

  auto copy_error = [](const std::function<void(SelectiveCopySpec&)>& edit) {
    SelectiveCopySpec s;
    edit(s);
    return invalid_argument_of([&] { cerebra::make_selective_copy(s, 1); });
  };
  EXPECT_NE(copy_error([](SelectiveCopySpec& s) { s.num_data = 0; }).find("num_data"), std::string::npos);
  EXPECT_NE(copy_error([](SelectiveCopySpec& s) { s.vocab_size = 4; }).find("vocab_size"), std::string::npos);
  EXPECT_NE(copy_error([](SelectiveCopySpec& s) { s.seq_len = 31; }).find("seq_len"), std::string::npos);
  EXPECT_EQ(copy_error([](SelectiveCopySpec& s) { s.seq_len = 32; }), "");

  auto induction_error = [](const std::function<void(InductionHeadsSpec&)>& edit) {
    InductionHeadsSpec s;
    edit(s);
    return invalid_argument_of([&] { cerebra::make_induction_heads(s, 1); });
  };
  EXPECT_NE(induction_error([](InductionHeadsSpec& s) { s.num_queries = 0; }).find("num_queries"), std::string::npos);
  EXPECT_NE(induction_error([](InductionHeadsSpec& s) { s.num_triggers = 0; }).find("num_triggers"),
            std::string::npos);
  EXPECT_NE(induction_error([](InductionHeadsSpec& s) { s.vocab_size = 5; }).find("vocab_size"), std::string::npos);
  EXPECT_NE(induction_error([](InductionHeadsSpec& s) { s.seq_len = 2; }).find("seq_len"), std::string::npos);
  EXPECT_EQ(induction_error([](InductionHeadsSpec& s) { s.seq_len = 3; }), "");
}
