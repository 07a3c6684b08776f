// The streaming sequence tasks (mqar, selective_copy, induction_heads) behind the Task interface: fresh training
// examples every step, parts disjoint by stream key, determinism in the seed, targets only at answer positions,
// config keys reaching the generators, the ladder configs; and the learning-rate sweep's selection.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/cli/bench_seq.h"
#include "cerebra/core/config.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/data/synthetic_stream.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace cerebra;

namespace {

const std::vector<std::string> kStream = {"mqar", "selective_copy", "induction_heads"};

// A 2-layer transformer of width 16 without dropout on a task.
Config small_transformer(const std::string& task) {
  Config c;
  c.set("task", task, "test");
  c.set("model", "transformer", "test");
  c.set("d_model", "16", "test");
  c.set("n_heads", "2", "test");
  c.set("n_layers", "2", "test");
  c.set("dropout", "0", "test");
  return c;
}

TaskSpec stream_spec(const std::string& task, uint64_t seed = 7) {
  TaskSpec t;
  t.name = task;
  t.seed = seed;
  t.synthetic.n = 64;
  t.synthetic.vocab = 256;
  t.synthetic.n_pairs = 4;
  t.synthetic.n_data = 8;
  t.synthetic.num_triggers = 2;
  t.steps = 20;
  t.batch_size = 8;
  t.train_examples = 5;  // ignored: training by steps
  t.val_examples = 16;
  t.test_examples = 24;
  return t;
}

std::vector<int64_t> iota_rows(int64_t lo, int64_t count) {
  std::vector<int64_t> r(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) r[i] = lo + i;
  return r;
}

// Row b of a (B, n) int64 tensor.
std::vector<int64_t> row_of(const torch::Tensor& t, int64_t b) {
  auto r = t[b].contiguous();
  return {r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel()};
}

}  // namespace

TEST(StreamTasks, TrainingPartIsStepsTimesBatchAndEachStepIsFresh) {
  for (const auto& name : kStream) {
    SCOPED_TRACE(name);
    const TaskSpec spec = stream_spec(name);
    auto task = make_seq_task(spec);
    ASSERT_EQ(task->size(Part::Train), spec.steps * spec.batch_size);
    EXPECT_EQ(task->size(Part::Val), 16);
    EXPECT_EQ(task->size(Part::Test), 24);
    std::set<std::vector<int64_t>> seen;
    for (int64_t step = 0; step < spec.steps; ++step) {
      Batch b = task->batch(Part::Train, iota_rows(step * spec.batch_size, spec.batch_size));
      for (int64_t i = 0; i < spec.batch_size; ++i) {
        const auto tokens = row_of(b.tokens, i);
        EXPECT_TRUE(seen.insert(tokens).second) << "step " << step << " example " << i << " repeats an earlier one";
        // Training example i is the stream example (seed, train, i / B, i % B).
        const SeqExample want =
            make_synthetic_example(name, spec.synthetic, stream_key(spec.seed, stream::kTrain, step, i));
        EXPECT_EQ(tokens, want.tokens);
        EXPECT_EQ(row_of(b.y, i), want.targets);
      }
    }
  }
}

TEST(StreamTasks, PartsAreDisjointByKey) {
  for (const auto& name : kStream) {
    SCOPED_TRACE(name);
    const TaskSpec spec = stream_spec(name);
    auto task = make_seq_task(spec);
    std::set<uint64_t> keys;
    std::set<std::vector<int64_t>> examples;
    int64_t total = 0;
    for (Part p : {Part::Train, Part::Val, Part::Test}) {
      const int64_t n = task->size(p);
      for (int64_t r = 0; r < n; ++r) keys.insert(synthetic_example_key(spec, p, r));
      Batch b = task->batch(p, iota_rows(0, n));
      for (int64_t r = 0; r < n; ++r) examples.insert(row_of(b.tokens, r));
      total += n;
    }
    EXPECT_EQ(static_cast<int64_t>(keys.size()), total) << "a key is shared between or within parts";
    EXPECT_EQ(static_cast<int64_t>(examples.size()), total) << "an example is shared between or within parts";
    // Validation and test are the fixed examples (seed, val | test, 0, i), whatever the training budget.
    TaskSpec longer = spec;
    longer.steps = 1000;
    longer.batch_size = 3;
    EXPECT_EQ(synthetic_example_key(longer, Part::Val, 5), synthetic_example_key(spec, Part::Val, 5));
    EXPECT_EQ(synthetic_example_key(longer, Part::Test, 5), synthetic_example_key(spec, Part::Test, 5));
  }
}

TEST(StreamTasks, DeterministicInTheSeed) {
  for (const auto& name : kStream) {
    SCOPED_TRACE(name);
    auto a = make_seq_task(stream_spec(name, 7)), b = make_seq_task(stream_spec(name, 7));
    auto c = make_seq_task(stream_spec(name, 8));
    for (Part p : {Part::Train, Part::Val, Part::Test}) {
      const std::vector<int64_t> rows = {0, 3, 9, 15};
      Batch x = a->batch(p, rows), y = b->batch(p, rows), z = c->batch(p, rows);
      EXPECT_TRUE(torch::equal(x.tokens, y.tokens));
      EXPECT_TRUE(torch::equal(x.y, y.y));
      EXPECT_FALSE(torch::equal(x.tokens, z.tokens)) << "another seed gives other data";
      // Rows are independent of the batch they are drawn in.
      Batch one = a->batch(p, {9});
      EXPECT_TRUE(torch::equal(one.tokens[0], x.tokens[2]));
    }
  }
}

TEST(StreamTasks, BatchesHoldTargetsOnlyAtAnswerPositions) {
  for (const auto& name : kStream) {
    SCOPED_TRACE(name);
    const TaskSpec spec = stream_spec(name);
    const SyntheticSpec& s = spec.synthetic;
    auto task = make_seq_task(spec);
    for (Part p : {Part::Train, Part::Test}) {
      Batch b = task->batch(p, iota_rows(0, 16));
      ASSERT_EQ(b.tokens.sizes(), b.y.sizes());
      EXPECT_TRUE(b.mask.all().item<bool>());
      for (int64_t r = 0; r < 16; ++r) {
        const auto tok = row_of(b.tokens, r), y = row_of(b.y, r);
        std::vector<int64_t> at;
        for (int64_t i = 0; i < s.n; ++i)
          if (y[i] != kIgnore) at.push_back(i);
        if (name == "mqar") {
          ASSERT_EQ(static_cast<int64_t>(at.size()), s.n_pairs);  // n_queries 0 = every pair
          for (int64_t i : at) {
            EXPECT_GE(i, 2 * s.n_pairs);
            // The answer is the value that followed this key among the pairs.
            int64_t value = -1;
            for (int64_t k = 0; k < s.n_pairs; ++k)
              if (tok[2 * k] == tok[i]) value = tok[2 * k + 1];
            EXPECT_EQ(y[i], value);
          }
        } else if (name == "selective_copy") {
          ASSERT_EQ(static_cast<int64_t>(at.size()), s.n_data);
          for (int64_t j = 0; j < s.n_data; ++j) {
            EXPECT_EQ(at[j], s.n - s.n_data + j);
            EXPECT_EQ(tok[at[j]], kBlank);
          }
        } else {
          ASSERT_EQ(at.size(), 1u);
          EXPECT_EQ(at[0], s.n - 1);
          EXPECT_EQ(tok[at[0]], kFirstData);  // the trigger
        }
        for (int64_t i : at) EXPECT_TRUE(y[i] >= kFirstData && y[i] < s.vocab);
        // The batch names its answer slots: exactly where a target is, as many as the task says.
        auto asked = b.answers[r];
        EXPECT_TRUE(asked.eq(b.y[r].ne(kIgnore)).all().item<bool>());
        EXPECT_EQ(asked.sum().item<int64_t>(), task->info().answers);
      }
    }
  }
}

// The head runs at the answer positions only: the same logits there, the same loss, per-example loss, gradients
// and metrics as the head at every position; and the analytic FLOPs count the head at the answers only.
TEST(StreamTasks, TheHeadRunsOnlyAtTheAnswerPositions) {
  torch::manual_seed(3);
  for (const auto& name : kStream) {
    SCOPED_TRACE(name);
    TaskSpec spec = stream_spec(name);
    auto task = make_seq_task(spec);
    const TaskInfo& info = task->info();
    Config c = small_transformer(name);
    auto model = make_model(parse_run_spec(c, false).model, info);
    Batch asked = task->batch(Part::Train, iota_rows(0, 6));
    ASSERT_TRUE(asked.answers.defined());
    Batch every = asked;
    every.answers = torch::Tensor();

    auto grads = [&](const Batch& b) {
      model->zero_grad();
      auto pred = model->forward(b);
      task->loss(pred, b).backward();
      std::vector<torch::Tensor> g;
      for (const auto& p : model->parameters()) g.push_back(p.grad().clone());
      return std::make_pair(pred.detach(), g);
    };
    auto [sparse, g_sparse] = grads(asked);
    auto [dense, g_dense] = grads(every);
    const int64_t K = asked.answers.sum().item<int64_t>();
    ASSERT_EQ(sparse.sizes(), (std::vector<int64_t>{K, info.n_classes}));
    ASSERT_EQ(dense.sizes(), (std::vector<int64_t>{6, info.n, info.n_classes}));
    EXPECT_TRUE(torch::allclose(sparse, dense.index({asked.answers}), 1e-5, 1e-5));
    EXPECT_NEAR(task->loss(sparse, asked).item<double>(), task->loss(dense, every).item<double>(), 1e-5);
    EXPECT_TRUE(torch::allclose(task->per_example_loss(sparse, asked), task->per_example_loss(dense, every), 1e-5,
                                1e-6));
    for (size_t i = 0; i < g_sparse.size(); ++i) EXPECT_TRUE(torch::allclose(g_sparse[i], g_dense[i], 1e-4, 1e-6));
    auto m_sparse = task->metrics(Part::Train), m_dense = task->metrics(Part::Train);
    m_sparse->add(sparse, asked);
    m_dense->add(dense, every);
    const auto a = m_sparse->result("t"), d = m_dense->result("t");
    EXPECT_EQ(a["t_accuracy"], d["t_accuracy"]);
    EXPECT_EQ(a["t_exact_match"], d["t_exact_match"]);
    EXPECT_EQ(a["t_answers"], d["t_answers"]);
    EXPECT_NEAR(a["t_loss"].get<double>(), d["t_loss"].get<double>(), 1e-5);

    // A prediction count that does not match the batch's answers is refused, not misread.
    EXPECT_THROW(task->loss(sparse.slice(0, 1), asked), c10::Error);
    // FLOPs: the head (2 · d · n_classes per position) at info.answers positions, not n.
    TaskInfo all = info;
    all.answers = 0;
    auto model_all = make_model(parse_run_spec(c, false).model, all);
    EXPECT_DOUBLE_EQ(model_all->flops_per_example() - model->flops_per_example(),
                     2.0 * 16 * info.n_classes * static_cast<double>(info.n - info.answers));
  }
}

// tie_embeddings: the head scores against the input embedding. A token absent from the input whose embedding row is
// zeroed gets exactly the head's bias as its logit (an untied head would still score it), the head's weight is gone
// from the parameters, and a gradient from the loss reaches that row only through the head. A task that predicts
// classes rather than its own tokens is refused.
TEST(StreamTasks, TiedEmbeddingsScoreTokensAgainstTheirEmbedding) {
  torch::manual_seed(5);
  TaskSpec spec = stream_spec("mqar");
  auto task = make_seq_task(spec);
  const TaskInfo& info = task->info();
  Config c = small_transformer("mqar");
  auto untied = make_model(parse_run_spec(c, false).model, info);
  c.set("tie_embeddings", "true", "test");
  auto tied = make_model(parse_run_spec(c, false).model, info);
  EXPECT_EQ(untied->parameter_count() - tied->parameter_count(), 16 * info.n_classes);
  EXPECT_DOUBLE_EQ(untied->flops_per_example(), tied->flops_per_example());

  Batch b = task->batch(Part::Train, iota_rows(0, 4));
  int64_t absent = -1;
  for (int64_t v = info.vocab - 1; v >= 0 && absent < 0; --v)
    if (!(b.tokens == v).any().item<bool>()) absent = v;
  ASSERT_GE(absent, 0);
  torch::Tensor embed_w, bias;
  for (const auto& p : tied->named_parameters()) {
    if (p.key() == "embed.weight") embed_w = p.value();
    if (p.key() == "head_bias") bias = p.value();
    EXPECT_NE(p.key(), "head.weight");
  }
  ASSERT_TRUE(embed_w.defined() && bias.defined());
  {
    torch::NoGradGuard g;
    embed_w[absent].zero_();
    bias.uniform_(-1, 1);
  }
  auto logits = tied->forward(b);
  EXPECT_TRUE(torch::allclose(logits.select(-1, absent), bias[absent].expand({logits.size(0)})));
  tied->zero_grad();
  task->loss(logits, b).backward();
  EXPECT_GT(embed_w.grad()[absent].abs().sum().item<double>(), 0.0);  // through the head only

  TaskInfo classes = info;
  classes.head = HeadKind::SequenceClassification;
  classes.n_classes = 45;
  try {
    make_model(parse_run_spec(c, false).model, classes);
    ADD_FAILURE() << "a classification head was tied";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("tie_embeddings"), std::string::npos) << e.what();
  }
}

// train_lengths: every training batch is at one of the lengths with the task's counts scaled, all of the lengths
// occur, validation and test stay at seq_len; lengths the task cannot hold are refused by name.
TEST(StreamTasks, TrainLengthsMixShorterTrainingBatches) {
  for (const auto& name : kStream) {
    SCOPED_TRACE(name);
    TaskSpec spec = stream_spec(name);
    spec.synthetic.n_pairs = 8;
    spec.synthetic.train_lengths = {32, 64};
    auto task = make_seq_task(spec);
    std::set<int64_t> seen;
    for (int64_t step = 0; step < 8; ++step) {
      Batch b = task->batch(Part::Train, iota_rows(step * spec.batch_size, spec.batch_size));
      const int64_t L = b.tokens.size(1);
      seen.insert(L);
      ASSERT_EQ(b.y.sizes(), b.tokens.sizes());
      const int64_t asked = b.answers[0].sum().item<int64_t>();
      if (name == "mqar") EXPECT_EQ(asked, L == 32 ? 4 : 8);  // n_pairs 8 at 64 -> 4 at 32
      if (name == "selective_copy") EXPECT_EQ(asked, L == 32 ? 4 : 8);  // n_data 8 -> 4
      if (name == "induction_heads") EXPECT_EQ(asked, 1);
      // Rows of one batch share its length and differ from each other (fresh examples).
      EXPECT_FALSE(b.tokens[0].equal(b.tokens[1]));
    }
    EXPECT_EQ(seen, (std::set<int64_t>{32, 64}));
    EXPECT_EQ(task->batch(Part::Val, iota_rows(0, 4)).tokens.size(1), 64);
    EXPECT_EQ(task->batch(Part::Test, iota_rows(0, 4)).tokens.size(1), 64);
    EXPECT_EQ(task->describe()["train_lengths"], (std::vector<int64_t>{32, 64}));
    EXPECT_DOUBLE_EQ(mean_train_length(spec.synthetic), 48.0);  // tokens per training example (tokens/s, tokens seen)
    EXPECT_DOUBLE_EQ(task->describe()["tokens_seen"].get<double>(), 48.0 * spec.steps * spec.batch_size);
  }
  TaskSpec spec = stream_spec("mqar");
  spec.synthetic.train_lengths = {128};
  EXPECT_NE(test::error_of([&] { make_seq_task(spec); }).find("train_lengths: 128 is longer than seq_len 64"),
            std::string::npos);
  spec.synthetic.train_lengths = {3};  // 1 pair and its query need 4 tokens
  EXPECT_NE(test::error_of([&] { make_seq_task(spec); }).find("train_lengths: at length 3: "), std::string::npos);
  Config c;
  c.set("task", "mqar", "test");
  c.set("train_lengths", "32,6x", "test");
  EXPECT_NE(test::error_of([&] { parse_run_spec(c); }).find("train_lengths: '6x' is not a positive whole number"),
            std::string::npos);
  c.set("train_lengths", "32", "test");
  c.set("task", "copy", "test");
  c.set("seq_len", "64", "test");
  c.set("vocab_size", "16", "test");
  c.set("n_data_tokens", "4", "test");
  EXPECT_NE(test::error_of([&] { make_seq_task(parse_run_spec(c).task); }).find("only the streaming tasks"),
            std::string::npos);
}

TEST(StreamTasks, EpochTrainingReadsTrainExamples) {
  TaskSpec spec = stream_spec("mqar");
  spec.steps = 0;
  spec.train_examples = 40;
  EXPECT_EQ(make_seq_task(spec)->size(Part::Train), 40);
  // copy and masked_recall keep their pool of train_examples whatever the step budget.
  spec.name = "copy";
  spec.synthetic.vocab = 16;
  spec.steps = 1000;
  EXPECT_EQ(make_seq_task(spec)->size(Part::Train), 40);
}

TEST(StreamTasks, ConfigKeysReachTheGenerators) {
  Config c;
  c.set("task", "mqar", "test");
  c.set("seq_len", "128", "test");
  c.set("vocab_size", "8192", "test");
  c.set("n_pairs", "8", "test");
  c.set("n_queries", "3", "test");
  c.set("power_a", "1", "test");
  c.set("random_non_queries", "false", "test");
  c.set("steps", "5", "test");
  c.set("batch_size", "4", "test");
  const TaskSpec t = parse_run_spec(c).task;
  EXPECT_EQ(t.synthetic.vocab, 8192);
  EXPECT_EQ(t.synthetic.n_queries, 3);
  EXPECT_DOUBLE_EQ(t.synthetic.power_a, 1.0);
  EXPECT_FALSE(t.synthetic.random_non_queries);
  EXPECT_EQ(t.steps, 5);
  EXPECT_EQ(t.batch_size, 4);
  auto task = make_seq_task(t);
  EXPECT_EQ(task->size(Part::Train), 20);
  const nlohmann::json d = task->describe();
  EXPECT_EQ(d["n_queries"], 3);
  EXPECT_EQ(d["random_non_queries"], false);
  EXPECT_EQ(d["tokens_seen"], 20 * 128);
  Batch b = task->batch(Part::Train, {0});
  EXPECT_EQ((b.y != kIgnore).sum().item<int64_t>(), 3);
  EXPECT_EQ((b.tokens == kNoise).sum().item<int64_t>(), 128 - 16 - 3);  // NOISE filler
  EXPECT_LT(b.tokens.max().item<int64_t>(), 8192);

  c.set("task", "induction_heads", "test");
  c.set("vocab_size", "32", "test");
  c.set("n_queries", "0", "test");
  c.set("num_triggers", "3", "test");
  const TaskSpec h = parse_run_spec(c).task;
  EXPECT_EQ(h.synthetic.num_triggers, 3);
  Batch hb = make_seq_task(h)->batch(Part::Val, {0});
  EXPECT_EQ((hb.tokens == kFirstData).sum().item<int64_t>(), 3 + 1);  // three bigrams and the query

  // Impossible specs are refused with the config's names.
  c.set("task", "mqar", "test");
  c.set("vocab_size", "8192", "test");
  c.set("n_queries", "9", "test");
  const std::string msg = test::error_of([&] { make_seq_task(parse_run_spec(c).task); });
  EXPECT_NE(msg.find("n_queries"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("num_queries"), std::string::npos) << msg;
  c.set("n_queries", "0", "test");
  c.set("n_pairs", "40", "test");  // 2*40 + 2*40 > 128
  EXPECT_THROW(make_seq_task(parse_run_spec(c).task), ConfigError);
}

TEST(StreamTasks, LadderConfigsLoad) {
  const fs::path dir = test::source_path("configs/ladder");
  int found = 0;
  for (const std::string name : {"mqar_n64", "mqar_n256", "mqar_n1024", "mqar_n4096", "selective_copy_n256",
                                 "selective_copy_n1024", "selective_copy_n4096", "induction_heads_n256"}) {
    SCOPED_TRACE(name);
    const fs::path f = dir / (name + ".yaml");
    ASSERT_TRUE(fs::exists(f)) << f;
    Config c;
    c.load_yaml_file(f.string());
    const RunSpec spec = parse_run_spec(c);
    const std::string task = name.substr(0, name.rfind("_n"));
    EXPECT_EQ(spec.task.name, task);
    EXPECT_EQ(spec.task.synthetic.n, std::stoll(name.substr(name.rfind("_n") + 2)));
    EXPECT_GT(spec.trainer.steps, 0);
    EXPECT_NO_THROW(validate_synthetic(task, spec.task.synthetic));
    EXPECT_EQ(synthetic_part_size(spec.task, Part::Train), spec.trainer.steps * spec.trainer.batch_size);
    EXPECT_GT(spec.task.synthetic.vocab, task == "mqar" ? spec.task.synthetic.n : 0);
    ++found;
  }
  EXPECT_EQ(found, 8);
}

TEST(BenchSweep, SelectsTheBestRunOnValidation) {
  const double nan = std::nan("");
  EXPECT_EQ(select_best_run({0.5, 0.9, 0.7}, true), 1);
  EXPECT_EQ(select_best_run({0.5, 0.9, 0.7}, false), 0);  // e.g. bits per character: lower is better
  EXPECT_EQ(select_best_run({nan, 0.2, 0.9}, true), 2);   // a failed run is never picked
  EXPECT_EQ(select_best_run({nan, 0.2, 0.9}, false), 1);
  EXPECT_EQ(select_best_run({0.8, 0.8, 0.3}, true), 0);   // ties: the earlier run
  EXPECT_EQ(select_best_run({nan, nan}, true), -1);
  EXPECT_EQ(select_best_run({}, true), -1);
}

TEST(BenchSweep, ParsesTheLearningRates) {
  EXPECT_EQ(parse_lr_sweep("1e-3, 3e-3,1e-2"), (std::vector<double>{1e-3, 3e-3, 1e-2}));
  EXPECT_EQ(parse_lr_sweep("0.001"), (std::vector<double>{0.001}));
  for (const char* bad : {"", "1e-3,abc", "0", "-1e-3", "1e-3x"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(parse_lr_sweep(bad), ConfigError);
  }
}

namespace {

Config tiny_mqar_bench_config() {
  Config c;
  c.set("task", "mqar", "test");
  c.set("threads", "1", "test");
  c.set("d_model", "16", "test");
  c.set("n_heads", "2", "test");
  c.set("n_layers", "1", "test");
  c.set("dropout", "0", "test");
  c.set("seq_len", "24", "test");
  c.set("vocab_size", "16", "test");
  c.set("n_pairs", "4", "test");
  c.set("val_examples", "8", "test");
  c.set("test_examples", "8", "test");
  c.set("batch_size", "8", "test");
  c.set("eval_batch_size", "8", "test");
  c.set("steps", "2", "test");
  return c;
}

}  // namespace

TEST(BenchSweep, ReportsEveryRunAndMarksTheSelectedOne) {
  const Config c = tiny_mqar_bench_config();
  const fs::path dir = test::temp_dir("lr_sweep");
  SeqBenchOptions o;
  o.lrs = {1e-3, 1e-2};
  o.quiet = true;
  ASSERT_EQ(bench_seq_tasks(c, {"transformer"}, dir.string(), o), 0);
  std::ifstream in(dir / "results.csv");
  std::string header, line;
  std::getline(in, header);
  EXPECT_EQ(header.rfind("task,n,model,lr,selected,status,", 0), 0u) << header;
  EXPECT_NE(header.find("val_accuracy"), std::string::npos) << header;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  ASSERT_EQ(lines.size(), 2u);
  int selected = 0;
  for (const auto& l : lines) selected += l.find(",true,ok,") != std::string::npos;
  EXPECT_EQ(selected, 1);
  EXPECT_TRUE(fs::exists(dir / "transformer" / "lr0.001" / "summary.json"));
  EXPECT_TRUE(fs::exists(dir / "transformer" / "lr0.01" / "summary.json"));
  fs::remove_all(dir);
}

// With seeds: one run per (model, lr, seed), the table's metric is the mean over seeds with its std, and a second
// bench over the same directory reads the finished runs back instead of training them again.
TEST(BenchSweep, SeedsAreAveragedAndFinishedRunsReused) {
  Config c = tiny_mqar_bench_config();
  c.set("seed", "5", "test");
  const fs::path dir = test::temp_dir("lr_sweep_seeds");
  SeqBenchOptions o;
  o.lrs = {1e-3, 3e-2};
  o.seeds = 2;
  o.quiet = true;
  ASSERT_EQ(bench_seq_tasks(c, {"transformer"}, dir.string(), o), 0);
  for (const char* lr : {"lr0.001", "lr0.03"})
    for (const char* seed : {"s5", "s6"}) EXPECT_TRUE(fs::exists(dir / "transformer" / lr / seed / "summary.json"));
  const auto results = nlohmann::json::parse(std::ifstream(dir / "results.json"));
  ASSERT_EQ(results.size(), 2u);
  int selected = 0;
  for (const auto& r : results) {
    SCOPED_TRACE(r.dump());
    selected += r.value("selected", false);
    ASSERT_EQ(r["seeds"], nlohmann::json({5, 6}));
    // The row's metric is the mean of its two runs, read from their summaries.
    std::vector<double> per_seed;
    for (const char* seed : {"s5", "s6"}) {
      const fs::path run = dir / "transformer" / fmt::format("lr{}", r["lr"].get<double>()) / seed;
      per_seed.push_back(nlohmann::json::parse(std::ifstream(run / "summary.json"))["metrics"]["test_accuracy"]);
    }
    EXPECT_NEAR(r["metric"].get<double>(), (per_seed[0] + per_seed[1]) / 2, 1e-12);
    EXPECT_NEAR(r["metric_std"].get<double>(), std::abs(per_seed[0] - per_seed[1]) / std::sqrt(2.0), 1e-12);
  }
  EXPECT_EQ(selected, 1);
  std::ifstream runs(dir / "runs.csv");
  std::string line;
  int n_runs = -1;  // the header
  while (std::getline(runs, line)) ++n_runs;
  EXPECT_EQ(n_runs, 4);

  const fs::path one = dir / "transformer" / "lr0.001" / "s5" / "summary.json";
  const auto written = fs::last_write_time(one);
  ASSERT_EQ(bench_seq_tasks(c, {"transformer"}, dir.string(), o), 0);
  EXPECT_EQ(fs::last_write_time(one), written) << "a finished run was trained again";
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(dir / "results.json")), results);
  fs::remove_all(dir);
}

// sweep_seeds: each learning rate runs on the first seed only, the selected one on every seed; the selected row's
// mean is over all its seeds, the other row's over the sweep's seed.
TEST(BenchSweep, SweepSeedsRunTheOtherSeedsOnlyAtTheSelectedRate) {
  Config c = tiny_mqar_bench_config();
  c.set("seed", "5", "test");
  const fs::path dir = test::temp_dir("lr_sweep_seeds_first");
  SeqBenchOptions o;
  o.lrs = {1e-3, 3e-2};
  o.seeds = 3;
  o.sweep_seeds = 1;
  o.quiet = true;
  ASSERT_EQ(bench_seq_tasks(c, {"transformer"}, dir.string(), o), 0);
  const auto results = nlohmann::json::parse(std::ifstream(dir / "results.json"));
  ASSERT_EQ(results.size(), 2u);
  int selected = 0;
  for (const auto& r : results) {
    SCOPED_TRACE(r.dump());
    const std::string lr = fmt::format("lr{}", r["lr"].get<double>());
    EXPECT_EQ(r["status"], "ok");
    if (r.value("selected", false)) {
      ++selected;
      EXPECT_EQ(r["seeds"], nlohmann::json({5, 6, 7}));
      for (const char* seed : {"s5", "s6", "s7"}) EXPECT_TRUE(fs::exists(dir / "transformer" / lr / seed / "summary.json"));
    } else {
      EXPECT_EQ(r["seeds"], nlohmann::json({5}));
      EXPECT_TRUE(fs::exists(dir / "transformer" / lr / "s5" / "summary.json"));
      EXPECT_FALSE(fs::exists(dir / "transformer" / lr / "s6"));
      EXPECT_TRUE(r["metric_std"].is_null());  // one seed: no spread
    }
  }
  EXPECT_EQ(selected, 1);
  std::ifstream runs(dir / "runs.csv");
  std::string line;
  int n_runs = -1;  // the header
  while (std::getline(runs, line)) ++n_runs;
  EXPECT_EQ(n_runs, 4);
  fs::remove_all(dir);
}
