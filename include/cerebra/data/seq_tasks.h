// Sequence tasks (SPEC §6): synthetic long-sequence tasks (copy, selective_copy, mqar, masked_recall,
// induction_heads), short-text classification (WordNet glosses -> lexicographer category) and character-level
// language modelling (Jane Austen), behind the Task interface (data/task.h), with a registry by name and a sequence
// model that any registered mixer can power.
//
// Token layout of the synthetic tasks (token ids; data tokens are 4 .. vocab_size-1):
//   0 PAD, 1 NOISE (filler), 2 SEP (start of the answer region), 3 BLANK (a slot whose answer is to be predicted)
// Answers never appear in the input: the model predicts, at each answer position, the token that belongs there.
// So the tasks are valid for non-causal mixers as well as causal ones (there is nothing to peek at).
//   copy            [L data][NOISE ...][SEP][L BLANK]               answer i = data token i (a delayed copy)
//   masked_recall   [a1 .. aL][SEP][a1 .. aL with a share of positions replaced by BLANK][NOISE]
//                   answer at a BLANK = the token that was masked (recall of a token seen earlier)
// Streaming tasks, the faithful generators of data/synthetic_stream.h (layouts and provenance there):
//   mqar            Zoology's multi-query associative recall: [k1 v1 .. kP vP][queries at power-law gaps among
//                   random data tokens (random_non_queries) or NOISE]; keys and values from disjoint halves of the
//                   data tokens; the answer at a query key is its value. Keys: n_pairs, n_queries, power_a,
//                   random_non_queries, vocab_size.
//   selective_copy  Mamba §4.1: [n_data_tokens data tokens at random positions among NOISE][n_data_tokens BLANK];
//                   answer i = the i-th data token in order.
//   induction_heads [random tokens with trigger-X bigrams (num_triggers each)][the n_queries triggers]; the answer
//                   at a final trigger is the token X that followed it.
// Every example has exactly n = seq_len tokens; targets are -100 (ignored) outside the answer positions.
// copy and masked_recall: example i of a part is generated from a seed derived from (seed, part, i): a fixed pool of
// train_examples for training and fixed validation and test sets.
// Streaming tasks: fresh training data every step, no pool. The training part has steps × batch_size examples
// (train_examples when training by epochs, which then revisit them), and training example i is the stream example
// (seed, train, step i / batch_size, index i % batch_size); validation and test are the fixed stream examples
// (seed, val | test, 0, i), i < val_examples | test_examples. The same seed always gives the same data.
//
// wordnet: each synset of /usr/share/wordnet/data.{noun,verb,adj,adv} (Debian wordnet-base) is one example; the
//   input is the definition part of its gloss (before the quoted usage examples), as bytes (byte + 1; 0 = padding)
//   or SentencePiece subwords learned from the training part only (tokenizer, vocab_size; data/tokenizer.h);
//   batches also carry the raw text (the bag-of-words baselines read it); the label is lex_filenum (the 2nd field), one of 45 lexicographer categories. The words of the
//   synset are not used (they give the label away). Shuffled split by seed, val_fraction, test_fraction.
//   Glosses longer than max_len tokens: length_policy truncate (with a warning giving the count) or error.
// janeausten: data/janeausten.txt as bytes (vocab 256); contiguous split: train | val | test by the fractions;
//   training windows of seq_len + 1 bytes at seeded offsets, validation and test windows consecutive; the model
//   predicts every next byte; metric: bits per character. Causal models only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "cerebra/data/task.h"
#include "cerebra/data/task_spec.h"

namespace cerebra {


// ---- registry
// `run_dir` non-empty: what an earlier run saved there (wordnet: its tokenizer) is restored.
using SeqTaskFactory = std::function<std::unique_ptr<Task>(const TaskSpec&, const std::string& run_dir)>;
void register_seq_task(const std::string& name, SeqTaskFactory factory);
std::vector<std::string> seq_task_names();
bool is_seq_task(const std::string& name);
std::unique_ptr<Task> make_seq_task(const TaskSpec& spec, const std::string& run_dir = "");  // by spec.name
// What a task's model needs (vocab, n, head), from the spec alone, without loading data.
TaskInfo seq_task_info(const TaskSpec& spec);

// ---- synthetic generators (exposed for tests; SyntheticSpec in task_spec.h)
struct SeqExample {
  std::vector<int64_t> tokens;   // n
  std::vector<int64_t> targets;  // n, -100 = not an answer position
};
constexpr int64_t kPad = 0, kNoise = 1, kSep = 2, kBlank = 3, kFirstData = 4;  // kIgnore: data/task.h
// The synthetic tasks (copy, selective_copy, mqar, masked_recall, induction_heads), and those among them generated
// as streams (mqar, selective_copy, induction_heads).
const std::vector<std::string>& synthetic_task_names();
bool is_stream_task(const std::string& task);
// Throws ConfigError when the spec cannot hold the task (e.g. 2·pairs + 2·queries > n), naming the config key.
void validate_synthetic(const std::string& task, const SyntheticSpec& spec);
// The example of a seed (copy, masked_recall) or of a stream key (the streaming tasks).
SeqExample make_synthetic_example(const std::string& task, const SyntheticSpec& spec, uint64_t seed);
// The seed of example `index` of a split (copy, masked_recall).
uint64_t example_seed(uint64_t seed, Part split, int64_t index);
// The stream key of example `row` of a part of a streaming task (see above); the seed of example_seed otherwise.
uint64_t synthetic_example_key(const TaskSpec& spec, Part part, int64_t row);
// A streaming task's spec at another length (the train_lengths curriculum): its counts scaled by length / n (at
// least 1): mqar pairs and queries, selective_copy data tokens, induction_heads trigger occurrences.
SyntheticSpec synthetic_at_length(const std::string& task, const SyntheticSpec& spec, int64_t length);
// Tokens per training example: seq_len, or the mean of train_lengths (each length trains equally many batches).
double mean_train_length(const SyntheticSpec& spec);
// The number of examples of a part of a synthetic task (training: steps × batch_size for streaming tasks).
int64_t synthetic_part_size(const TaskSpec& spec, Part part);

// ---- loaders (exposed for tests); errors name file:line and the reason
struct TextExample {
  std::string text;
  int64_t label = 0;
  std::string origin;  // file:line
};
std::vector<TextExample> load_wordnet_file(const std::string& path);
std::vector<TextExample> load_wordnet(const std::string& dir);  // data.{noun,verb,adj,adv}
std::string load_lm_text(const std::string& path, int64_t min_bytes);
// Tokens cut to max_len: longer is truncated (truncated = true) or, when `error_on_long`, std::runtime_error naming
// the origin and the length in `unit`s; an empty text is one padding token.
std::vector<int64_t> fit_to_length(std::vector<int64_t> tokens, int64_t max_len, bool error_on_long,
                                   const std::string& origin, const std::string& unit, bool* truncated);
// Byte tokens of a text (byte + 1, 0 = padding), fitted to max_len as above.
std::vector<int64_t> byte_tokens(const std::string& text, int64_t max_len, bool error_on_long,
                                 const std::string& origin, bool* truncated);

}  // namespace cerebra
