// What a run's task is (config keys of groups "data" and "task"), parsed once with the run's spec
// (include/cerebra/train/spec.h); the data layer reads only this struct, never the config.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cerebra {

// The synthetic sequence tasks' shape (include/cerebra/data/seq_tasks.h).
struct SyntheticSpec {
  int64_t n = 256, vocab = 64, n_data = 16, n_pairs = 16;
  int64_t n_queries = 0;            // mqar: queried pairs (0 = n_pairs); induction_heads: triggers queried (0 = 1)
  double mask_fraction = 0.15;
  double power_a = 0.01;            // mqar: query gaps p(g) ∝ (g+1)^(power_a-1) (Zoology)
  bool random_non_queries = true;   // mqar: filler between queries is uniform data tokens (else NOISE)
  int64_t num_triggers = 1;         // induction_heads: occurrences of each trigger-X bigram in the context
  // Streaming tasks: the lengths of the training batches, each batch at one of them (empty = n). The task's counts
  // (mqar pairs and queries, selective_copy data tokens) scale with the length; validation and test stay at n.
  std::vector<int64_t> train_lengths;
};

// How text becomes tokens (wordnet): bytes, or SentencePiece subwords trained on the training split only.
struct TokenizerSpec {
  std::string kind = "bytes";       // bytes | sentencepiece
  int64_t vocab_size = 8000;        // sentencepiece: pieces, including <unk> and the 256 byte-fallback pieces
  std::string model_type = "unigram";  // sentencepiece: unigram | bpe
};

struct TaskSpec {
  std::string name = "cps1988";  // a tabular data set, csv, or a sequence task
  uint64_t seed = 42;            // of the split and of generated examples
  double val_fraction = 0.1, test_fraction = 0.2;
  int64_t max_rows = 0;          // tabular: first N rows; wordnet: cap on the training split (0 = all)
  // Files: the data set's file (empty = the task's file in data_dir).
  std::string data, data_dir = "data";
  // Tabular: target column and transform (empty = the task's default), forced column kinds, ignored columns.
  std::string target, target_transform;
  std::vector<std::string> categorical, numeric, drop;
  // Sequence tasks.
  SyntheticSpec synthetic;  // n = seq_len (synthetic tasks and the character LM)
  int64_t train_examples = 20000, val_examples = 256, test_examples = 1000;
  // The trainer's step budget (0 = epochs) and batch size: the streaming tasks (mqar, selective_copy,
  // induction_heads) size their training part steps × batch_size and read example i at (step i / batch_size,
  // index i % batch_size) of the stream.
  int64_t steps = 0, batch_size = 1;
  int64_t max_len = 256;               // wordnet: longest gloss in tokens (bytes or pieces)
  bool error_on_long = false;          // wordnet: length_policy error (else truncate with a warning)
  std::string wordnet_dir = "/usr/share/wordnet";
  TokenizerSpec tokenizer;             // wordnet
};

}  // namespace cerebra
