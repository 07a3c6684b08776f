// Text to tokens for the text tasks (wordnet): bytes, or SentencePiece subwords (unigram or BPE) whose vocabulary is
// trained on the training split only and saved with the run (tokenizer.model), so eval reloads the same pieces.
// Token ids are in [1, vocab): 0 is padding.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "cerebra/data/task_spec.h"

namespace cerebra {

// The SentencePiece vocabulary of a run, beside its config.yaml.
inline constexpr const char* kTokenizerFile = "tokenizer.model";

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of a text, each in [1, vocab()).
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // The text of ids (0 = padding is skipped); decode(encode(t)) == t.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // The surface string of every token id 1 .. vocab() - 1 (a subword piece, or one byte).
  virtual std::vector<std::string> pieces() const = 0;
  // Writes what reloads it into a run directory (nothing for bytes).
  virtual void save(const std::string& run_dir) const {}
  // Kind and size for summary.json.
  virtual nlohmann::json describe() const = 0;
};

// Token ids of a tokenizer spec are below this (the embedding size): 257 for bytes, vocab_size + 1 for sentencepiece.
int64_t tokenizer_vocab(const TokenizerSpec& spec);
// Checks a spec before any data is read; throws ConfigError naming the key.
void validate_tokenizer(const TokenizerSpec& spec, const std::string& task);
// A tokenizer learned from `training_texts` (bytes: nothing to learn). SentencePiece: its settings
// (character coverage 1, byte fallback so every text round-trips, no normalisation) fixed here.
std::unique_ptr<Tokenizer> train_tokenizer(const TokenizerSpec& spec, const std::vector<std::string>& training_texts);
// The tokenizer a run directory saved (bytes: none is saved). Throws naming the missing file.
std::unique_ptr<Tokenizer> load_tokenizer(const TokenizerSpec& spec, const std::string& run_dir);

}  // namespace cerebra
