// Text classification: word n-grams, the SentencePiece tokenizer (trained on training text only, exact round trip,
// reloaded with the run), and the bag-of-words baselines nb and logreg on a WordNet excerpt
// (tests/fixtures/wordnet_text: 60 glosses each of noun.animal, noun.plant, noun.food and verb.motion).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/core/io.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/data/tokenizer.h"
#include "cerebra/models/text_baselines.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace cerebra;
using test::error_of;
using test::temp_dir;

namespace {

const char* kFixture = "tests/fixtures/wordnet_text";

Config text_config(const std::string& model, const std::string& dir = test::source_path(kFixture)) {
  Config c;
  c.set("task", "wordnet", "test");
  c.set("wordnet_dir", dir, "test");
  c.set("model", model, "test");
  c.set("threads", "1", "test");
  c.set("val_fraction", "0.2", "test");
  c.set("test_fraction", "0.2", "test");
  c.set("val_examples", "0", "test");
  c.set("test_examples", "0", "test");
  c.set("max_len", "128", "test");
  c.set("vocab_size", "1000", "test");
  c.set("d_model", "16", "test");
  c.set("n_heads", "2", "test");
  c.set("n_layers", "1", "test");
  c.set("epochs", "2", "test");
  c.set("batch_size", "16", "test");
  c.set("eval_batch_size", "32", "test");
  c.set("dropout", "0", "test");
  return c;
}

std::vector<int64_t> all_rows(const Task& t, Part p) {
  std::vector<int64_t> r(static_cast<size_t>(t.size(p)));
  std::iota(r.begin(), r.end(), 0);
  return r;
}

std::vector<std::string> part_texts(const Task& t, Part p) { return t.batch(p, all_rows(t, p)).text; }

// A copy of the fixture in which the glosses of `part` (and only those) start with `word`. The split depends only on
// the number of glosses and the seed, so it is the same as the fixture's.
fs::path fixture_with_word_in(Part part, const std::string& word, const std::string& name) {
  auto task = make_seq_task(parse_run_spec(text_config("nb")).task);
  const auto marked = part_texts(*task, part);
  const std::set<std::string> marked_set(marked.begin(), marked.end());
  const fs::path dir = temp_dir(name);
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {
    std::ifstream in(test::source_path(kFixture) + "/data." + pos);
    std::ofstream out(dir / (std::string("data.") + pos));
    for (std::string line; std::getline(in, line);) {
      const auto bar = line.find(" | ");
      if (bar != std::string::npos) {
        const std::string gloss = line.substr(bar + 3);
        std::string def = gloss.substr(0, gloss.find('"'));
        def = def.substr(0, def.find_last_not_of(" ;\t") + 1);
        if (marked_set.count(def)) line = line.substr(0, bar + 3) + word + " " + gloss;
      }
      out << line << "\n";
    }
  }
  return dir;
}

bool contains(const std::vector<std::string>& texts, const std::string& s) {
  return std::any_of(texts.begin(), texts.end(), [&](const std::string& t) { return t.find(s) != std::string::npos; });
}

}  // namespace

TEST(TextWords, LowercaseAlphanumericRunsAndBigrams) {
  EXPECT_EQ(word_tokens("A man-made object, 2nd kind;"),
            (std::vector<std::string>{"a", "man", "made", "object", "2nd", "kind"}));
  EXPECT_TRUE(word_tokens(" -- ").empty());
  EXPECT_EQ(word_ngrams("Move fast", 1), (std::vector<std::string>{"move", "fast"}));
  EXPECT_EQ(word_ngrams("move fast now", 2),
            (std::vector<std::string>{"move", "fast", "now", "move fast", "fast now"}));
}

TEST(TextTokenizer, SentencePieceSeesTrainingTextOnly) {
  const std::string word = "frumblewock";
  // The word in test glosses only: no piece may carry it.
  const fs::path test_only = fixture_with_word_in(Part::Test, word, "sp_test_only");
  Config c = text_config("transformer", test_only.string());
  c.set("tokenizer", "sentencepiece", "test");
  auto task = make_seq_task(parse_run_spec(c).task);
  ASSERT_TRUE(contains(part_texts(*task, Part::Test), word)) << "fixture: the word is in the test glosses";
  ASSERT_FALSE(contains(part_texts(*task, Part::Train), word)) << "fixture: and not in the training glosses";
  auto sp = train_tokenizer(parse_run_spec(c).task.tokenizer, part_texts(*task, Part::Train));
  for (const auto& p : sp->pieces()) EXPECT_EQ(p.find("frumble"), std::string::npos) << "leaked piece " << p;
  // The task's vocabulary is exactly the one learned from its training part (byte for byte), and not the one
  // learned from all its text, which differs: a leak would show.
  const fs::path saved = temp_dir("sp_saved"), train_only = temp_dir("sp_train_only"), all = temp_dir("sp_all");
  task->save(saved.string());
  sp->save(train_only.string());
  std::vector<std::string> every = part_texts(*task, Part::Train);
  for (Part p : {Part::Val, Part::Test})
    for (const auto& t : part_texts(*task, p)) every.push_back(t);
  train_tokenizer(parse_run_spec(c).task.tokenizer, every)->save(all.string());
  const std::string task_vocab = read_text_file(saved / kTokenizerFile);
  EXPECT_EQ(task_vocab, read_text_file(train_only / kTokenizerFile));
  EXPECT_NE(task_vocab, read_text_file(all / kTokenizerFile));
  // The task's own tokenizer is the one learned from its training part: its token ids of a test gloss match.
  const auto test_batch = task->batch(Part::Test, all_rows(*task, Part::Test));
  for (int64_t i = 0; i < test_batch.size(); ++i) {
    const auto ids = sp->encode(test_batch.text[i]);
    const int64_t len = test_batch.mask[i].sum().item<int64_t>();
    ASSERT_EQ(static_cast<int64_t>(ids.size()), len);
    for (int64_t j = 0; j < len; ++j) ASSERT_EQ(test_batch.tokens[i][j].item<int64_t>(), ids[j]);
  }
  for (const auto& d : {test_only, saved, train_only, all}) fs::remove_all(d);
}

TEST(TextTokenizer, EncodeDecodeRoundTrip) {
  Config c = text_config("transformer");
  auto task = make_seq_task(parse_run_spec(c).task);
  const auto train = part_texts(*task, Part::Train);
  std::vector<std::string> texts = part_texts(*task, Part::Test);
  texts.push_back("caf\xc3\xa9 na\xc3\xafve \xe2\x80\x93 unseen characters, double  spaces and a trailing space ");
  for (const std::string type : {"unigram", "bpe"}) {
    SCOPED_TRACE(type);
    TokenizerSpec spec;
    spec.kind = "sentencepiece";
    spec.model_type = type;
    spec.vocab_size = 1000;
    auto sp = train_tokenizer(spec, train);
    EXPECT_LE(static_cast<int64_t>(sp->pieces().size()), spec.vocab_size);
    for (const auto& t : texts) {
      const auto ids = sp->encode(t);
      for (auto id : ids) ASSERT_TRUE(id >= 1 && id < tokenizer_vocab(spec)) << id;
      EXPECT_EQ(sp->decode(ids), t);
    }
    // Subwords are shorter than bytes on text like the training text.
    size_t pieces = 0, bytes = 0;
    for (const auto& t : train) pieces += sp->encode(t).size(), bytes += t.size();
    EXPECT_LT(pieces * 2, bytes);
  }
  TokenizerSpec bytes;
  auto b = train_tokenizer(bytes, train);
  for (const auto& t : texts) EXPECT_EQ(b->decode(b->encode(t)), t);
  EXPECT_EQ(tokenizer_vocab(bytes), 257);
}

TEST(TextTokenizer, VocabularyReloadsWithTheRunAndEvalReproduces) {
  Config c = text_config("transformer");
  c.set("tokenizer", "sentencepiece", "test");
  c.set("sentencepiece_model", "bpe", "test");
  const fs::path dir = temp_dir("sp_run");
  const nlohmann::json s = train_run(parse_run_spec(c), dir.string(), RunOptions{true});
  ASSERT_TRUE(fs::exists(dir / kTokenizerFile));
  EXPECT_EQ(s["data"]["tokenizer"]["kind"], "sentencepiece");
  EXPECT_EQ(s["task_info"]["vocab"], 1001);
  const nlohmann::json e = eval_run(dir.string(), RunOptions{true});
  EXPECT_TRUE(e["matches_summary"].get<bool>()) << e.dump();
  // The reloaded task tokenizes with the saved vocabulary, not a new one.
  LoadedRun run = load_run(dir.string());
  auto fresh = make_seq_task(parse_run_spec(c).task);
  const auto a = run.task->batch(Part::Test, all_rows(*run.task, Part::Test));
  const auto b = fresh->batch(Part::Test, all_rows(*fresh, Part::Test));
  EXPECT_TRUE(torch::equal(a.tokens, b.tokens));
  // A vocabulary from other text changes the tokens: reloading is what keeps them.
  Config other = c;
  other.set("vocab_size", "330", "test");
  TokenizerSpec small = parse_run_spec(other).task.tokenizer;
  auto sp = train_tokenizer(small, {"zzz yyy xxx www", "qqq ppp ooo"});
  const fs::path odir = temp_dir("sp_other");
  sp->save(odir.string());
  auto replaced = make_seq_task(parse_run_spec(other).task, odir.string());
  EXPECT_FALSE(torch::equal(replaced->batch(Part::Test, all_rows(*replaced, Part::Test)).tokens, b.tokens));
  // Without its tokenizer.model the run does not load, and says which file is missing.
  fs::remove(dir / kTokenizerFile);
  const std::string msg = error_of([&] { eval_run(dir.string(), RunOptions{true}); });
  EXPECT_NE(msg.find(kTokenizerFile), std::string::npos) << msg;
  fs::remove_all(dir);
  fs::remove_all(odir);
}

TEST(TextBaselines, BeatTheMajorityClassAndReload) {
  auto task = make_seq_task(parse_run_spec(text_config("nb")).task);
  std::map<int64_t, int64_t> train_counts;
  auto ytr = task->batch(Part::Train, all_rows(*task, Part::Train)).y;
  for (int64_t i = 0; i < ytr.size(0); ++i) ++train_counts[ytr[i].item<int64_t>()];
  const int64_t majority =
      std::max_element(train_counts.begin(), train_counts.end(), [](auto& a, auto& b) { return a.second < b.second; })
          ->first;
  auto yte = task->batch(Part::Test, all_rows(*task, Part::Test)).y;
  const double majority_acc = yte.eq(majority).to(torch::kFloat64).mean().item<double>();
  for (const std::string model : {"nb", "logreg"}) {
    SCOPED_TRACE(model);
    const fs::path dir = temp_dir("text_" + model);
    const nlohmann::json s = train_run(parse_run_spec(text_config(model)), dir.string(), RunOptions{true});
    const double acc = s["metrics"]["test_accuracy"].get<double>();
    EXPECT_GT(acc, majority_acc + 0.25) << "majority class " << majority_acc;
    EXPECT_GT(s["metrics"]["test_macro_f1"].get<double>(), 0.5);
    EXPECT_GT(s["params"].get<int64_t>(), 0);
    EXPECT_GT(s["training"]["features"].get<int64_t>(), 0);
    // The forward runs as a counted sparse product: analytic and measured FLOPs agree to the examples' lengths.
    const double analytic = s["flops"]["analytic_forward_per_example"].get<double>();
    const double measured = s["flops"]["measured_forward_per_example"].get<double>();
    EXPECT_GT(analytic, 0);
    EXPECT_NEAR(measured / analytic, 1.0, 0.5);
    const nlohmann::json e = eval_run(dir.string(), RunOptions{true});
    EXPECT_TRUE(e["matches_summary"].get<bool>()) << e.dump();
    fs::remove_all(dir);
  }
}

TEST(TextBaselines, NaiveBayesMatchesItsDefinition) {
  // Two classes, one feature each side: P(class | text) follows the smoothed counts exactly.
  TextBaselineParams p;
  p.ngrams = 1;
  p.min_df = 1;
  p.nb_alpha = 1.0;
  TextLinearClassifier nb(TextLinearClassifier::Method::NaiveBayes, p, 2);
  nb.fit({"red red apple", "green apple", "green leaf"}, {0, 0, 1}, {}, {});
  // Features (sorted): apple, green, leaf, red. Class 0 counts: apple 2, green 1, red 2 (5); class 1: green 1, leaf 1 (2).
  const auto logits = nb.logits({"red leaf"});
  const double l0 = std::log(2.0 / 3) + std::log(3.0 / 9) + std::log(1.0 / 9);
  const double l1 = std::log(1.0 / 3) + std::log(1.0 / 6) + std::log(2.0 / 6);
  EXPECT_NEAR(logits[0][0].item<double>(), l0, 1e-5);
  EXPECT_NEAR(logits[0][1].item<double>(), l1, 1e-5);
}

// group_by_length: every epoch trains on every example once, in batches that pad far less than shuffled ones, in an
// order that changes from epoch to epoch and is the same for the same seed; a task of one length refuses it.
TEST(TextTraining, GroupByLengthBatchesSimilarLengthsAndSeesEveryExampleOnce) {
  const RunSpec spec = parse_run_spec(text_config("transformer"));
  auto task = make_seq_task(spec.task);
  const int64_t n = task->size(Part::Train), kVal = int64_t{1} << 20;  // validation rows are kVal + index
  std::vector<int64_t> train_rows(static_cast<size_t>(n)), val_rows(static_cast<size_t>(task->size(Part::Val)));
  std::iota(train_rows.begin(), train_rows.end(), 0);
  std::iota(val_rows.begin(), val_rows.end(), kVal);
  auto batches_of = [&](bool group, uint64_t seed) {
    torch::manual_seed(1);
    auto net = make_model(spec.model, task->info());
    TrainerOptions o = spec.trainer;
    o.quiet = true;
    o.group_by_length = group;
    o.seed = seed;
    o.epochs = 2;
    o.patience = 0;
    o.batch_size = 8;
    std::vector<std::vector<int64_t>> batches;
    TrainerHooks h;
    h.make_batch = [&](const std::vector<int64_t>& rows) {
      if (rows.front() >= kVal) {
        std::vector<int64_t> v;
        for (auto r : rows) v.push_back(r - kVal);
        return task->batch(Part::Val, v);
      }
      batches.push_back(rows);
      return task->batch(Part::Train, rows);
    };
    h.example_length = [&](int64_t row) { return task->length(Part::Train, row); };
    h.loss = [&](const torch::Tensor& pred, const Batch& b) { return task->loss(pred, b); };
    train_model(*net, train_rows, val_rows, o, h);
    return batches;
  };
  // Padding: the tokens of the padded batches over the examples' own tokens.
  auto padding = [&](const std::vector<std::vector<int64_t>>& batches) {
    double padded = 0, own = 0;
    for (const auto& b : batches) {
      int64_t longest = 0;
      for (auto r : b) {
        longest = std::max(longest, task->length(Part::Train, r));
        own += static_cast<double>(task->length(Part::Train, r));
      }
      padded += static_cast<double>(longest * static_cast<int64_t>(b.size()));
    }
    return padded / own;
  };
  const auto grouped = batches_of(true, 7), shuffled = batches_of(false, 7);
  const size_t per_epoch = static_cast<size_t>((n + 7) / 8);
  ASSERT_EQ(grouped.size(), 2 * per_epoch);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> seen;
    for (size_t b = epoch * per_epoch; b < (epoch + 1) * per_epoch; ++b)
      seen.insert(seen.end(), grouped[b].begin(), grouped[b].end());
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, train_rows) << "epoch " << epoch + 1;
  }
  EXPECT_LT(padding(grouped), 1.0 + 0.5 * (padding(shuffled) - 1.0))
      << "grouped " << padding(grouped) << ", shuffled " << padding(shuffled);
  EXPECT_NE(std::vector<std::vector<int64_t>>(grouped.begin(), grouped.begin() + per_epoch),
            std::vector<std::vector<int64_t>>(grouped.begin() + per_epoch, grouped.end()));
  EXPECT_EQ(batches_of(true, 7), grouped);
  EXPECT_NE(batches_of(true, 8), grouped);
  // A task whose examples all have one length has nothing to group: the run says so before training.
  Config mqar;
  mqar.set("task", "mqar", "test");
  mqar.set("group_by_length", "true", "test");
  const fs::path dir = temp_dir("group_mqar");
  const std::string msg = error_of([&] { train_run(parse_run_spec(mqar), dir.string(), RunOptions{true}); });
  EXPECT_NE(msg.find("group_by_length"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mqar"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir / "metrics.jsonl"));
  fs::remove_all(dir);
}

TEST(TextConfig, ErrorsNameTheKey) {
  Config c = text_config("nb");
  c.set("tokenizer", "sentencepiece", "test");
  c.set("vocab_size", "100", "test");
  EXPECT_NE(error_of([&] { parse_run_spec(c); }).find("vocab_size"), std::string::npos);
  c.set("task", "janeausten", "test");
  c.set("vocab_size", "1000", "test");
  EXPECT_NE(error_of([&] { parse_run_spec(c); }).find("tokenizer"), std::string::npos);
  Config t = test::fixture_config("nb");
  const std::string msg = error_of([&] {
    const RunSpec spec = parse_run_spec(t);
    make_model(spec.model, make_task(spec.task)->info());
  });
  EXPECT_NE(msg.find("has no text"), std::string::npos) << msg;
  Config l = text_config("logreg");
  l.set("text_ngrams", "3", "test");
  EXPECT_NE(error_of([&] { parse_run_spec(l); }).find("text_ngrams"), std::string::npos);
}
