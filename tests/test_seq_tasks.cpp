// Sequence tasks: deterministic generators whose answers an independent solver reproduces, the WordNet and
// character-LM loaders (including malformed input), padding masks, and one training run of every task for every
// registered mixer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "cerebra/cli/bench_seq.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"
#include "cerebra/core/config.h"
#include "cerebra/models/mixer.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace cerebra;
using test::temp_dir;
using test::error_of;

namespace {

const std::vector<std::string> kSynthetic = {"copy", "selective_copy", "mqar", "masked_recall", "induction_heads"};

SyntheticSpec small_spec() {
  SyntheticSpec s;
  s.n = 64;
  s.vocab = 24;
  s.n_data = 6;
  s.n_pairs = 8;
  s.n_queries = 5;
  s.mask_fraction = 0.25;
  return s;
}

std::vector<int64_t> answers(const SeqExample& e) {
  std::vector<int64_t> a;
  for (auto t : e.targets)
    if (t != kIgnore) a.push_back(t);
  return a;
}

}  // namespace

TEST(SeqTaskGenerators, DeterministicInTheSeed) {
  const SyntheticSpec s = small_spec();
  for (const auto& task : kSynthetic) {
    SCOPED_TRACE(task);
    auto a = make_synthetic_example(task, s, 123), b = make_synthetic_example(task, s, 123);
    auto c = make_synthetic_example(task, s, 124);
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.targets, b.targets);
    EXPECT_TRUE(a.tokens != c.tokens || a.targets != c.targets);
    EXPECT_EQ(static_cast<int64_t>(a.tokens.size()), s.n);
    EXPECT_EQ(static_cast<int64_t>(a.targets.size()), s.n);
    for (auto t : a.tokens) EXPECT_TRUE(t >= 0 && t < s.vocab) << t;
  }
  // Splits and indices draw different examples; the same (seed, split, index) always the same one.
  EXPECT_EQ(example_seed(7, Part::Test, 3), example_seed(7, Part::Test, 3));
  EXPECT_NE(example_seed(7, Part::Test, 3), example_seed(7, Part::Train, 3));
  EXPECT_NE(example_seed(7, Part::Test, 3), example_seed(8, Part::Test, 3));
  EXPECT_NE(example_seed(7, Part::Test, 3), example_seed(7, Part::Test, 4));
}

TEST(SeqTaskGenerators, CopyAnswersAreTheLeadingTokens) {
  const SyntheticSpec s = small_spec();
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto e = make_synthetic_example("copy", s, seed);
    std::vector<int64_t> want(e.tokens.begin(), e.tokens.begin() + s.n_data);
    EXPECT_EQ(answers(e), want);
    EXPECT_EQ(e.tokens[s.n - s.n_data - 1], kSep);
    for (int64_t i = s.n - s.n_data; i < s.n; ++i) EXPECT_EQ(e.tokens[i], kBlank);
    for (int64_t i = s.n_data; i < s.n - s.n_data - 1; ++i) EXPECT_EQ(e.tokens[i], kNoise);
  }
}

TEST(SeqTaskGenerators, SelectiveCopyAnswersAreTheFilteredDataTokens) {
  const SyntheticSpec s = small_spec();
  const int64_t region = s.n - s.n_data;  // Mamba's layout: the region, then one BLANK per data token
  std::set<std::vector<int64_t>> layouts;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    auto e = make_synthetic_example("selective_copy", s, seed);
    // Independent solver: keep the data tokens of the region, in order.
    std::vector<int64_t> filtered, where;
    for (int64_t i = 0; i < region; ++i) {
      if (e.tokens[i] >= kFirstData) filtered.push_back(e.tokens[i]), where.push_back(i);
      else EXPECT_EQ(e.tokens[i], kNoise);
      EXPECT_EQ(e.targets[i], kIgnore);
    }
    EXPECT_EQ(static_cast<int64_t>(filtered.size()), s.n_data);
    EXPECT_EQ(answers(e), filtered);
    for (int64_t i = region; i < s.n; ++i) {
      EXPECT_EQ(e.tokens[i], kBlank);
      EXPECT_NE(e.targets[i], kIgnore);
    }
    layouts.insert(where);
  }
  EXPECT_GT(layouts.size(), 20u);  // the data tokens really are scattered
}

TEST(SeqTaskGenerators, MqarAnswersAreTheDictionaryLookups) {
  for (bool random_filler : {true, false}) {
    SCOPED_TRACE(random_filler);
    SyntheticSpec s = small_spec();
    s.random_non_queries = random_filler;
    const int64_t keys = (s.vocab - kFirstData) / 2;
    for (uint64_t seed = 0; seed < 30; ++seed) {
      auto e = make_synthetic_example("mqar", s, seed);
      std::map<int64_t, int64_t> dict;
      std::set<int64_t> values;
      for (int64_t i = 0; i < s.n_pairs; ++i) {
        const int64_t k = e.tokens[2 * i], v = e.tokens[2 * i + 1];
        EXPECT_TRUE(k >= kFirstData && k < kFirstData + keys) << k;
        EXPECT_TRUE(v >= kFirstData + keys && v < s.vocab) << v;
        EXPECT_EQ(dict.count(k), 0u) << "keys must be distinct";
        EXPECT_TRUE(values.insert(v).second) << "values must be distinct";
        dict[k] = v;
      }
      int64_t queries = 0;
      std::set<int64_t> asked;
      for (int64_t p = 0; p < s.n; ++p) {
        if (e.targets[p] == kIgnore) {
          if (p >= 2 * s.n_pairs) {
            if (random_filler) EXPECT_TRUE(e.tokens[p] >= kFirstData && e.tokens[p] < s.vocab) << e.tokens[p];
            else EXPECT_EQ(e.tokens[p], kNoise);
          }
          continue;
        }
        ASSERT_GE(p, 2 * s.n_pairs) << "answers come after the pairs";
        EXPECT_EQ((p - 2 * s.n_pairs) % 2, 0) << "queries sit at even offsets (Zoology: 2 * gap)";
        ASSERT_EQ(dict.count(e.tokens[p]), 1u) << "a query is one of the keys";
        EXPECT_EQ(e.targets[p], dict[e.tokens[p]]);
        asked.insert(e.tokens[p]);
        ++queries;
      }
      EXPECT_EQ(queries, s.n_queries);
      EXPECT_EQ(static_cast<int64_t>(asked.size()), s.n_queries);
    }
  }
}

TEST(SeqTaskGenerators, InductionHeadsAnswerIsTheTokenAfterTheTrigger) {
  SyntheticSpec s = small_spec();
  s.n_queries = 0;  // the default: one trigger queried
  s.num_triggers = 2;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    auto e = make_synthetic_example("induction_heads", s, seed);
    const auto a = answers(e);
    ASSERT_EQ(a.size(), 1u);
    ASSERT_NE(e.targets[s.n - 1], kIgnore);
    const int64_t trigger = e.tokens[s.n - 1];
    EXPECT_EQ(trigger, kFirstData);
    int64_t seen = 0;
    for (int64_t p = 0; p + 1 < s.n - 1; ++p)
      if (e.tokens[p] == trigger) {
        EXPECT_EQ(e.tokens[p + 1], a[0]);
        ++seen;
      }
    EXPECT_EQ(seen, s.num_triggers);
  }
}

TEST(SeqTaskGenerators, MaskedRecallAnswersAreTheMaskedTokens) {
  const SyntheticSpec s = small_spec();
  const int64_t L = (s.n - 1) / 2;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto e = make_synthetic_example("masked_recall", s, seed);
    EXPECT_EQ(e.tokens[L], kSep);
    int64_t masked = 0;
    for (int64_t i = 0; i < L; ++i) {
      const int64_t p = L + 1 + i;
      if (e.tokens[p] == kBlank) {
        EXPECT_EQ(e.targets[p], e.tokens[i]);
        ++masked;
      } else {
        EXPECT_EQ(e.tokens[p], e.tokens[i]);
        EXPECT_EQ(e.targets[p], kIgnore);
      }
    }
    EXPECT_EQ(masked, static_cast<int64_t>(std::llround(s.mask_fraction * L)));
    EXPECT_EQ(static_cast<int64_t>(answers(e).size()), masked);
  }
}

TEST(SeqTaskGenerators, ImpossibleSpecsAreRefused) {
  SyntheticSpec s = small_spec();
  s.n_pairs = 30;  // 2*30 + 5 > 64 and more pairs than the 10 keys
  EXPECT_THROW(validate_synthetic("mqar", s), ConfigError);
  s = small_spec();
  s.n_queries = 9;  // more queries than pairs
  EXPECT_NE(error_of([&] { validate_synthetic("mqar", s); }).find("n_queries"), std::string::npos);
  s = small_spec();
  s.n_data = 40;
  EXPECT_NE(error_of([&] { validate_synthetic("copy", s); }).find("seq_len"), std::string::npos);
  for (const auto& t : kSynthetic) EXPECT_NO_THROW(validate_synthetic(t, small_spec()));
}

TEST(SeqTaskLoaders, WordnetFixture) {
  auto ex = load_wordnet(test::source_path("tests/fixtures/wordnet"));
  // 6 + 4 + 4 + 3 synsets; the adjective whose gloss is only a usage example is skipped.
  ASSERT_EQ(ex.size(), 16u);
  EXPECT_EQ(ex[0].label, 3);
  EXPECT_EQ(ex[0].text, "that which is perceived or known or inferred to have its own distinct existence");
  EXPECT_EQ(ex[2].label, 18);
  EXPECT_EQ(ex[2].text, "a human being");  // the usage example is dropped
  EXPECT_EQ(ex[2].text.find("person"), std::string::npos);
  for (const auto& e : ex) {
    EXPECT_TRUE(e.label >= 0 && e.label < 45);
    EXPECT_FALSE(e.text.empty());
    EXPECT_EQ(e.text.find('"'), std::string::npos);
  }
}

TEST(SeqTaskLoaders, WordnetMalformedNamesFileAndLine) {
  const std::string bad = test::source_path("tests/fixtures/wordnet_bad/data.noun");
  const std::string msg = error_of([&] { load_wordnet_file(bad); });
  EXPECT_NE(msg.find(bad + ":3:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lex_filenum '7x'"), std::string::npos) << msg;

  auto dir = temp_dir("wn");
  auto write = [&](const std::string& text) {
    std::ofstream(dir / "data.noun") << text;
    return error_of([&] { load_wordnet_file((dir / "data.noun").string()); });
  };
  EXPECT_NE(write("  header\n00001 03 n 01 x 0 000 no separator here\n").find("data.noun:2: no gloss"),
            std::string::npos);
  EXPECT_NE(write("00001 47 n 01 x 0 000 | a gloss\n").find("data.noun:1: lex_filenum 47 is outside 00..44"),
            std::string::npos);
  EXPECT_NE(write("justone\n").find("data.noun:1: expected"), std::string::npos);
  EXPECT_NE(error_of([&] { load_wordnet((dir / "missing").string()); }).find("cannot open"), std::string::npos);
  fs::remove_all(dir);
}

TEST(SeqTaskLoaders, LmTextAndByteTokens) {
  const std::string path = test::source_path("tests/fixtures/lm_small.txt");
  EXPECT_EQ(load_lm_text(path, 100).size(), 3000u);
  EXPECT_NE(error_of([&] { load_lm_text(path, 5000); }).find(path + ":1: 3000 bytes"), std::string::npos);
  auto dir = temp_dir("lm");
  {
    std::ofstream f(dir / "nul.txt", std::ios::binary);
    f << "line one\nline two\nbad";
    f.put('\0');
    f << "tail\n";
  }
  EXPECT_NE(error_of([&] { load_lm_text((dir / "nul.txt").string(), 1); }).find("nul.txt:3: NUL byte"),
            std::string::npos);
  fs::remove_all(dir);

  bool truncated = true;
  EXPECT_EQ(byte_tokens("ab", 4, true, "x", &truncated), (std::vector<int64_t>{'a' + 1, 'b' + 1}));
  EXPECT_FALSE(truncated);
  EXPECT_EQ(byte_tokens("abcdef", 3, false, "x", &truncated), (std::vector<int64_t>{'a' + 1, 'b' + 1, 'c' + 1}));
  EXPECT_TRUE(truncated);
  EXPECT_NE(error_of([&] { byte_tokens("abcdef", 3, true, "f.txt:9", nullptr); }).find("f.txt:9: text of 6 bytes"),
            std::string::npos);
}

namespace {

Config tiny_config(const std::string& task, const std::string& model) {
  Config c;
  c.set("task", task, "test");
  c.set("model", model, "test");
  c.set("threads", "1", "test");
  c.set("d_model", "16", "test");
  c.set("n_heads", "2", "test");
  c.set("n_layers", "1", "test");
  c.set("dropout", "0", "test");
  c.set("seq_len", "24", "test");
  c.set("vocab_size", "16", "test");
  c.set("n_data_tokens", "4", "test");
  c.set("n_pairs", "4", "test");
  c.set("train_examples", "8", "test");
  c.set("val_examples", "4", "test");
  c.set("test_examples", "4", "test");
  c.set("batch_size", "8", "test");
  c.set("eval_batch_size", "8", "test");
  c.set("epochs", "1", "test");
  c.set("steps", "1", "test");
  c.set("max_len", "48", "test");
  c.set("topk", "4", "test");
  c.set("memory_max", "4", "test");
  c.set("wordnet_dir", test::source_path("tests/fixtures/wordnet"), "test");
  c.set("data", test::source_path("tests/fixtures/lm_small.txt"), "test");
  c.set("val_fraction", "0.2", "test");
  c.set("test_fraction", "0.2", "test");
  return c;
}

std::string model_of(const std::string& mixer) { return mixer == "attention" ? "transformer" : mixer; }

}  // namespace

TEST(SeqTaskBatches, WordnetPaddingMasksAndLengthPolicy) {
  Config c = tiny_config("wordnet", "transformer");
  c.set("max_len", "30", "test");
  auto task = make_seq_task(parse_run_spec(c).task);
  EXPECT_EQ(task->size(Part::Train) + task->size(Part::Val) + task->size(Part::Test), 16);
  std::vector<int64_t> rows(static_cast<size_t>(task->size(Part::Train)));
  std::iota(rows.begin(), rows.end(), 0);
  Batch b = task->batch(Part::Train, rows);
  EXPECT_LE(b.tokens.size(1), 30);
  EXPECT_TRUE(b.tokens.masked_select(b.mask.logical_not()).eq(0).all().item<bool>());
  EXPECT_TRUE(b.tokens.masked_select(b.mask).gt(0).all().item<bool>());
  EXPECT_FALSE(b.mask.all().item<bool>()) << "glosses differ in length";
  // Each row's mask is a prefix of real tokens.
  auto lens = b.mask.sum(1);
  for (int64_t i = 0; i < b.mask.size(0); ++i)
    EXPECT_TRUE(b.mask[i].slice(0, 0, lens[i].item<int64_t>()).all().item<bool>());
  c.set("length_policy", "error", "test");
  const std::string msg = error_of([&] { make_seq_task(parse_run_spec(c).task); });
  EXPECT_NE(msg.find("exceeds max_len 30"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.noun:"), std::string::npos) << msg;
}

TEST(SeqTaskBatches, SequenceClassifierIgnoresPadding) {
  // The logits of an example must not depend on how much padding its batch adds. Not for cerebra: its compressor
  // cuts the padded length of the batch into memory segments (cerebra_layer.h), so its output depends on it by design.
  for (const auto& mixer : mixer_names()) {
    if (mixer == "cerebra") continue;
    SCOPED_TRACE(mixer);
    Config c = tiny_config("wordnet", model_of(mixer));
    auto task = make_seq_task(parse_run_spec(c).task);
    torch::manual_seed(3);
    auto model = make_model(parse_run_spec(c).model, task->info());
    model->eval();
    torch::NoGradGuard g;
    std::vector<int64_t> rows(static_cast<size_t>(task->size(Part::Train)));
    std::iota(rows.begin(), rows.end(), 0);
    Batch all = task->batch(Part::Train, rows);
    auto lens = all.mask.sum(1);
    const int64_t shortest = lens.argmin().item<int64_t>();
    Batch alone = task->batch(Part::Train, {rows[shortest]});
    ASSERT_LT(alone.tokens.size(1), all.tokens.size(1));
    auto a = model->forward(all)[shortest], b = model->forward(alone)[0];
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-4)) << (a - b).abs().max().item<double>();
  }
}

class SeqTaskTraining : public ::testing::TestWithParam<std::string> {};

TEST_P(SeqTaskTraining, EveryTaskTrainsOneStep) {
  const std::string mixer = GetParam();
  for (const auto& task : seq_task_names()) {
    SCOPED_TRACE(task);
    Config c = tiny_config(task, model_of(mixer));
    auto dir = temp_dir(task + "_" + mixer);
    const TaskInfo info = seq_task_info(parse_run_spec(c).task);
    bool causal_ok = true;
    if (info.needs_causal) {
      MixerOptions mo;
      mo.d_model = 16;
      mo.n_heads = 2;
      mo.causal = true;
      try {
        causal_ok = make_mixer(mixer, mo)->is_causal();
      } catch (const std::exception&) {
        causal_ok = false;
      }
    }
    if (!causal_ok) {
      const std::string msg = error_of([&] { train_run(parse_run_spec(c), dir.string(), RunOptions{true}); });
      EXPECT_NE(msg.find("has no causal form"), std::string::npos) << msg;
      fs::remove_all(dir);
      continue;
    }
    nlohmann::json s = train_run(parse_run_spec(c), dir.string(), RunOptions{true});
    EXPECT_EQ(s["task"], task);
    EXPECT_GT(s["params"].get<int64_t>(), 0);
    EXPECT_EQ(s["training"]["steps"].get<int64_t>(), 1);
    const std::string pm = s["primary_metric"].get<std::string>();
    ASSERT_TRUE(s["metrics"].contains(pm));
    EXPECT_TRUE(std::isfinite(s["metrics"][pm].get<double>()));
    for (const char* k : {"analytic_forward_per_example", "measured_forward_per_example", "realised_per_example",
                          "expected_per_example", "realised_per_token"})
      EXPECT_GT(s["flops"][k].get<double>(), 0) << k;
    if (info.head != HeadKind::SequenceClassification) {
      // Fixed-length tasks: the counter's FLOPs match the analytic count (cerebra's realised cost is its own).
      if (mixer != "cerebra")
        EXPECT_NEAR(s["flops"]["measured_forward_per_example"].get<double>(),
                    s["flops"]["analytic_forward_per_example"].get<double>(),
                    0.05 * s["flops"]["analytic_forward_per_example"].get<double>());
    }
    if (info.head == HeadKind::SequenceClassification) EXPECT_TRUE(s["metrics"].contains("test_macro_f1"));
    if (info.head == HeadKind::CausalLM) EXPECT_TRUE(s["metrics"].contains("test_bits_per_char"));
    for (const char* f : {"config.yaml", "metrics.jsonl", "model.pt", "summary.json"})
      EXPECT_TRUE(fs::exists(dir / f)) << f;
    fs::remove_all(dir);
  }
}

INSTANTIATE_TEST_SUITE_P(AllMixers, SeqTaskTraining, ::testing::ValuesIn(mixer_names()),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

TEST(SeqTaskRuns, EvalReproducesTheSummaryAndDeterministicAcrossRuns) {
  Config c = tiny_config("mqar", "transformer");
  c.set("steps", "0", "test");
  c.set("epochs", "2", "test");
  auto d1 = temp_dir("eval1"), d2 = temp_dir("eval2");
  nlohmann::json s1 = train_run(parse_run_spec(c), d1.string(), RunOptions{true});
  nlohmann::json s2 = train_run(parse_run_spec(c), d2.string(), RunOptions{true});
  EXPECT_EQ(s1["metrics"]["test_loss"], s2["metrics"]["test_loss"]);
  nlohmann::json r = eval_run(d1.string(), RunOptions{true});
  EXPECT_TRUE(r["matches_summary"].get<bool>()) << r.dump();
  fs::remove_all(d1);
  fs::remove_all(d2);
}

TEST(SeqTaskRuns, MatchedParameterBudget) {
  for (const std::string model : {"transformer", "lstm", "mamba"}) {
    SCOPED_TRACE(model);
    Config c = tiny_config("mqar", model);
    const TaskInfo info = seq_task_info(parse_run_spec(c).task);
    auto params = [&](int64_t d) {
      Config x = c;
      x.set("d_model", std::to_string(d), "test");
      return make_model(parse_run_spec(x).model, info)->parameter_count();
    };
    const int64_t budget = 50000;
    const int64_t d = match_d_model(c, info, budget);
    EXPECT_EQ(d % 4, 0);
    // No other multiple of 4 comes closer to the budget.
    for (int64_t other : {d - 4, d + 4})
      if (other > 0) EXPECT_LE(std::llabs(params(d) - budget), std::llabs(params(other) - budget)) << other;
  }
}

TEST(SeqTaskRuns, MemoryEstimate) {
  Config c = tiny_config("mqar", "transformer");
  c.set("seq_len", "1024", "test");
  c.set("batch_size", "32", "test");
  const TaskInfo info = seq_task_info(parse_run_spec(c).task);
  // Dense attention's n^2 scores dominate at long n; the LSTM's estimate grows only linearly.
  const double att = estimate_train_bytes(parse_run_spec(c), info, 1000);
  c.set("seq_len", "4096", "test");
  const double att4 = estimate_train_bytes(parse_run_spec(c), seq_task_info(parse_run_spec(c).task), 1000);
  EXPECT_GT(att4 / att, 12.0);
  c.set("model", "lstm", "test");
  const double lstm4 = estimate_train_bytes(parse_run_spec(c), seq_task_info(parse_run_spec(c).task), 1000);
  c.set("seq_len", "1024", "test");
  EXPECT_LT(lstm4 / estimate_train_bytes(parse_run_spec(c), seq_task_info(parse_run_spec(c).task), 1000), 4.5);
}

// The whole recipe on a sequence task: λ ramp, pruning, QAT and the sampler from one config; the pruned, QAT run
// The sampler's Ĉ is each example's realised cost in its last pass: with adaptive routing on glosses of different
// lengths (packed, so a short gloss runs less), the costs it holds differ between examples.
TEST(SeqTaskRuns, SamplerCostIsEachExamplesRealisedCost) {
  Config c = tiny_config("wordnet", "cerebra");
  c.set("router_mode", "adaptive", "test");
  c.set("unrouted", "skip", "test");
  c.set("steps", "0", "test");
  c.set("epochs", "3", "test");
  c.set("warm_epochs", "0", "test");
  c.set("batch_size", "4", "test");
  c.set("sampler", "compute_aware", "test");
  c.set("sampler_start_epoch", "2", "test");
  c.set("sampler_gamma", "5", "test");
  auto dir = temp_dir("seq_sampler_cost");
  train_run(parse_run_spec(c), dir.string(), RunOptions{true});
  std::ifstream m(dir / "metrics.jsonl");
  int sampled = 0;
  for (std::string line; std::getline(m, line);) {
    auto j = nlohmann::json::parse(line);
    if (!j.value("sampler_active", false)) continue;
    ++sampled;
    const double lo = j["sampler_cost_min"].get<double>(), hi = j["sampler_cost_max"].get<double>();
    EXPECT_GT(lo, 0.0);
    EXPECT_GT(hi, lo) << "every example was charged the same";
  }
  EXPECT_EQ(sampled, 2);
  fs::remove_all(dir);
}

// reloads by itself and evaluates to the numbers it wrote.
TEST(SeqTaskRuns, FullRecipeRunsAndReloads) {
  Config c = tiny_config("mqar", "cerebra");
  c.set("n_heads", "4", "test");
  c.set("train_examples", "32", "test");
  c.set("steps", "0", "test");
  c.set("epochs", "5", "test");
  c.set("warm_epochs", "1", "test");
  c.set("lambda_ramp_epochs", "1", "test");
  c.set("lambda", "1e-2", "test");
  c.set("prune_start_epoch", "2", "test");
  c.set("prune_epochs", "2", "test");
  c.set("prune_target", "0.5", "test");
  c.set("prune_kinds", "heads,ffn", "test");
  c.set("qat", "true", "test");
  c.set("qat_start_epoch", "4", "test");
  c.set("sampler", "compute_aware", "test");
  c.set("sampler_start_epoch", "3", "test");
  auto dir = temp_dir("seq_recipe");
  const int64_t unpruned = make_model(parse_run_spec(c).model, seq_task_info(parse_run_spec(c).task))->parameter_count();
  nlohmann::json s = train_run(parse_run_spec(c), dir.string(), RunOptions{true});
  ASSERT_TRUE(s["training"].contains("pruning")) << s["training"].dump();
  const auto& pr = s["training"]["pruning"];
  EXPECT_LT(pr["prune_kept"]["ffn"].get<int64_t>(), pr["prune_original"]["ffn"].get<int64_t>());
  EXPECT_LT(pr["prune_kept"]["heads"].get<int64_t>(), pr["prune_original"]["heads"].get<int64_t>());
  EXPECT_LT(s["params"].get<int64_t>(), unpruned);
  EXPECT_TRUE(fs::exists(dir / "pruned.json"));
  ASSERT_TRUE(s["quant"].is_object());
  EXPECT_TRUE(s["quant"]["qat"].get<bool>());
  // metrics.jsonl: the sampler's statistics from its start epoch, QAT flagged from its epoch.
  std::ifstream m(dir / "metrics.jsonl");
  std::string line;
  int epochs = 0, sampled = 0, qat = 0;
  while (std::getline(m, line)) {
    auto j = nlohmann::json::parse(line);
    if (!j.contains("epoch")) continue;
    ++epochs;
    if (j.value("sampler_active", false)) ++sampled;
    if (j.value("qat", false)) ++qat;
  }
  EXPECT_EQ(epochs, 5);
  EXPECT_EQ(sampled, 3);
  EXPECT_EQ(qat, 2);
  nlohmann::json r = eval_run(dir.string(), RunOptions{true});
  EXPECT_TRUE(r["matches_summary"].get<bool>()) << r.dump();
  fs::remove_all(dir);
}
