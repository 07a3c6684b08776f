// The one interface every task implements, tabular regression and sequence tasks alike: the examples of each
// part of the split as batches, the loss and metrics of its head, and its provenance for summary.json. The run
// pipeline (include/cerebra/train/run.h) trains, measures, evaluates and reloads any task through it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/types.h>

#include "cerebra/core/batch.h"
#include "cerebra/data/task_spec.h"

namespace cerebra {

enum class HeadKind {
  TokenClassification,     // predict at answer positions (y: (B, n), -100 elsewhere), output (B, n, n_classes),
                           // or (K, n_classes) at the batch's K answer positions when Batch::answers is set
  SequenceClassification,  // one label per sequence (y: (B,)), masked mean pooling, output (B, n_classes)
  CausalLM,                // predict the next token at every position (y: (B, n)), output (B, n, n_classes)
  Regression,              // one standardised target per example (y: (B,)), output (B, 1)
};
std::string head_kind_name(HeadKind k);

// The three parts of a task's split.
enum class Part { Train = 0, Val = 1, Test = 2 };

// Target value of a token position that is not predicted (cross-entropy ignore_index).
constexpr int64_t kIgnore = -100;

struct TaskInfo {
  std::string name;
  HeadKind head = HeadKind::TokenClassification;
  int64_t vocab = 0;      // token tasks: input token ids are in [0, vocab)
  int64_t n = 0;          // token tasks: tokens per example (the longest, for variable-length tasks); tabular: 0
  int64_t n_classes = 0;  // outputs per prediction (1 for regression)
  int64_t answers = 0;    // token classification: answer positions per example (the head runs there); 0 = all n
  bool needs_causal = false;
  bool has_text = false;  // batches carry each example's raw text (Batch::text): text classification
  std::string metric;     // the primary test metric, e.g. "test_accuracy"
  bool higher_is_better = true;
  InputSchema schema;     // tabular: the features the model reads
  bool is_sequence() const { return head != HeadKind::Regression; }
};

// Accumulates a part's metrics from the predictions of consecutive batches (rows 0, 1, ... of the part in order).
class MetricSink {
 public:
  virtual ~MetricSink() = default;
  virtual void add(const torch::Tensor& pred, const Batch& batch) = 0;
  // The metrics, each key prefixed ("test" -> "test_accuracy", ...).
  virtual nlohmann::json result(const std::string& prefix) const = 0;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual const TaskInfo& info() const = 0;
  virtual int64_t size(Part part) const = 0;
  // The batch of the given examples (indices into the part): sequence tasks pad tokens (B, n_b) with a mask.
  virtual Batch batch(Part part, const std::vector<int64_t>& rows) const = 0;
  // Tasks whose examples differ in length (text): the tokens of an example, which its batch pads to the longest of;
  // 0 = every example has the task's length n (the default).
  virtual int64_t length(Part part, int64_t row) const { return 0; }
  // Provenance and sizes (summary.json "data").
  virtual nlohmann::json describe() const = 0;
  // One line for the run's log; default: "task mqar (token_classification): n=64, vocab=256, 20000 train / ...".
  virtual std::string log_line() const;
  // Task-specific summary.json keys (e.g. the regression target's transform and scale).
  virtual nlohmann::json summary_fields() const;  // default: {}
  // Writes what a re-evaluation needs beside config.yaml into the run directory (e.g. split.json).
  virtual void save(const std::string& run_dir) const {}

  // The head's training loss (a scalar), and per example (B,) for the compute-aware sampler.
  virtual torch::Tensor loss(const torch::Tensor& pred, const Batch& batch) const;
  virtual torch::Tensor per_example_loss(const torch::Tensor& pred, const Batch& batch) const;
  // Extra fields of an epoch's metrics line from the validation loss (e.g. val_rmse in the target's units).
  virtual nlohmann::json describe_val(double val_loss) const;
  // A sink for the metrics of one part.
  virtual std::unique_ptr<MetricSink> metrics(Part part) const;
};

// The task of a spec: a sequence task from its registry (include/cerebra/data/seq_tasks.h) or a tabular data set
// (include/cerebra/data/tabular.h). `run_dir` non-empty: what an earlier run saved there (a tabular split, a text
// task's tokenizer) is restored.
std::unique_ptr<Task> make_task(const TaskSpec& spec, const std::string& run_dir = "");

// A token-level head's predictions as rows: logits (R, n_classes), their targets (R,) (kIgnore where nothing is
// asked) and the example of each row (R,). pred is (B, n, C) (every position) or (K, C) (the batch's answers).
struct PredictionRows {
  torch::Tensor logits, y, example;
};
PredictionRows prediction_rows(const torch::Tensor& pred, const Batch& batch);

// Accuracy (and macro-F1, exact match or bits per character by head) of a classification head.
std::unique_ptr<MetricSink> classification_metrics(HeadKind head, int64_t n_classes, int64_t examples);

}  // namespace cerebra
