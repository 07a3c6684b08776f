// Byte and SentencePiece tokenizers of the text tasks (include/cerebra/data/tokenizer.h).
#include "cerebra/data/tokenizer.h"

#include <dlfcn.h>

#include <filesystem>
#include <stdexcept>
#include <utility>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/core/io.h"
#include "cerebra_spm_path.h"  // CEREBRA_SPM_LIBRARY: where the build put libcerebra_spm.so

namespace fs = std::filesystem;

namespace cerebra {

namespace {

// Fewest pieces a SentencePiece vocabulary can have here: <unk>, the 256 byte-fallback pieces and some characters.
constexpr int64_t kMinPieces = 320;

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int64_t> encode(const std::string& text) const override {
    std::vector<int64_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]) + 1;
    return ids;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::string s;
    for (auto id : ids)
      if (id > 0) s.push_back(static_cast<char>(id - 1));
    return s;
  }
  std::vector<std::string> pieces() const override {
    std::vector<std::string> p;
    for (int b = 0; b < 256; ++b) p.emplace_back(1, static_cast<char>(b));
    return p;
  }
  nlohmann::json describe() const override { return {{"kind", "bytes"}, {"vocab", 257}}; }
};

// SentencePiece through libcerebra_spm.so (src/data/sentencepiece_shim.cpp), loaded once with its own symbol scope.
class SpmLibrary {
 public:
  using Train = char* (*)(const char* const*, const size_t*, size_t, const char* const*, const char* const*, size_t,
                          char**, size_t*);
  using Load = char* (*)(const char*, size_t, void**);
  using Free = void (*)(void*);
  using Encode = char* (*)(void*, const char*, size_t, int**, size_t*);
  using Decode = char* (*)(void*, const int*, size_t, char**, size_t*);
  using PieceSize = int (*)(void*);
  using Piece = char* (*)(void*, int, size_t*);

  static const SpmLibrary& get() {
    static const SpmLibrary lib;
    return lib;
  }
  // Throws with the library's message when `err` is set (and frees it).
  void check(char* err, const std::string& what) const {
    if (!err) return;
    std::string msg(err);
    free_buffer(err);
    throw std::runtime_error("sentencepiece: " + what + ": " + msg);
  }
  std::string take(char* p, size_t len) const {
    std::string s(p, len);
    free_buffer(p);
    return s;
  }

  Train train = nullptr;
  Load load = nullptr;
  Free free_model = nullptr, free_buffer = nullptr;
  Encode encode = nullptr;
  Decode decode = nullptr;
  PieceSize piece_size = nullptr;
  Piece piece = nullptr;

 private:
  SpmLibrary() {
    // Beside the running executable first (an installed or copied build), then where the build put it.
    std::vector<std::string> candidates;
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "libcerebra_spm.so").string());
    candidates.push_back(CEREBRA_SPM_LIBRARY);
    std::string errors;
    for (const auto& path : candidates) {
      if (!fs::exists(path)) continue;
      handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle_) break;
      errors += fmt::format(" {}: {};", path, dlerror());
    }
    if (!handle_)
      throw std::runtime_error(fmt::format("tokenizer: sentencepiece: cannot load libcerebra_spm.so (looked beside the "
                                           "executable and at {}; it needs Debian's libsentencepiece0):{}",
                                           CEREBRA_SPM_LIBRARY, errors.empty() ? " not found" : errors));
    sym(train, "cerebra_spm_train");
    sym(load, "cerebra_spm_load");
    sym(free_model, "cerebra_spm_free");
    sym(free_buffer, "cerebra_spm_free_buffer");
    sym(encode, "cerebra_spm_encode");
    sym(decode, "cerebra_spm_decode");
    sym(piece_size, "cerebra_spm_piece_size");
    sym(piece, "cerebra_spm_piece");
  }
  template <typename F>
  void sym(F& f, const char* name) {
    f = reinterpret_cast<F>(dlsym(handle_, name));
    if (!f) throw std::runtime_error(std::string("tokenizer: libcerebra_spm.so lacks ") + name);
  }
  void* handle_ = nullptr;  // kept for the life of the process
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const TokenizerSpec& spec, std::string proto, const std::string& origin)
      : spec_(spec), proto_(std::move(proto)), lib_(SpmLibrary::get()) {
    lib_.check(lib_.load(proto_.data(), proto_.size(), &sp_), origin + ": not a SentencePiece model");
    pieces_ = lib_.piece_size(sp_);
    if (pieces_ > spec.vocab_size) {
      lib_.free_model(sp_);
      throw std::runtime_error(fmt::format("{}: {} pieces, more than vocab_size {} of the config", origin, pieces_,
                                           spec.vocab_size));
    }
  }
  ~SentencePieceTokenizer() override { lib_.free_model(sp_); }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text) const override {
    int* ids = nullptr;
    size_t n = 0;
    lib_.check(lib_.encode(sp_, text.data(), text.size(), &ids, &n), "cannot encode text");
    std::vector<int64_t> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = ids[i] + 1;  // token id = piece id + 1 (0 is padding)
    lib_.free_buffer(ids);
    return out;
  }
  std::string decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> sp_ids;
    for (auto id : ids)
      if (id > 0) sp_ids.push_back(static_cast<int>(id - 1));
    char* text = nullptr;
    size_t len = 0;
    lib_.check(lib_.decode(sp_, sp_ids.data(), sp_ids.size(), &text, &len), "cannot decode ids");
    return lib_.take(text, len);
  }
  std::vector<std::string> pieces() const override {
    std::vector<std::string> p;
    for (int i = 0; i < pieces_; ++i) {
      size_t len = 0;
      char* s = lib_.piece(sp_, i, &len);
      p.push_back(lib_.take(s, len));
    }
    return p;
  }
  void save(const std::string& run_dir) const override { write_text_file(fs::path(run_dir) / kTokenizerFile, proto_); }
  nlohmann::json describe() const override {
    return {{"kind", "sentencepiece"}, {"model_type", spec_.model_type}, {"pieces", pieces_},
            {"vocab", spec_.vocab_size + 1}, {"file", kTokenizerFile}};
  }

 private:
  TokenizerSpec spec_;
  std::string proto_;
  const SpmLibrary& lib_;
  void* sp_ = nullptr;
  int pieces_ = 0;
};

}  // namespace

int64_t tokenizer_vocab(const TokenizerSpec& spec) { return spec.kind == "bytes" ? 257 : spec.vocab_size + 1; }

void validate_tokenizer(const TokenizerSpec& spec, const std::string& task) {
  if (spec.kind != "bytes" && spec.kind != "sentencepiece")
    throw ConfigError(fmt::format("tokenizer: expected bytes or sentencepiece, got '{}'", spec.kind));
  if (spec.kind == "bytes") return;
  if (task != "wordnet")
    throw ConfigError(fmt::format("tokenizer: sentencepiece applies to the text task wordnet; task {} keeps its own "
                                  "tokens (the character LM reads characters)", task));
  if (spec.model_type != "unigram" && spec.model_type != "bpe")
    throw ConfigError(fmt::format("sentencepiece_model: expected unigram or bpe, got '{}'", spec.model_type));
  if (spec.vocab_size < kMinPieces)
    throw ConfigError(fmt::format("vocab_size {} is too small for tokenizer: sentencepiece: it needs at least {} "
                                  "(<unk>, 256 byte-fallback pieces and the characters)", spec.vocab_size,
                                  kMinPieces));
}

std::unique_ptr<Tokenizer> train_tokenizer(const TokenizerSpec& spec, const std::vector<std::string>& training_texts) {
  if (spec.kind == "bytes") return std::make_unique<ByteTokenizer>();
  if (training_texts.empty()) throw std::runtime_error("tokenizer: no training text to learn a vocabulary from");
  const std::vector<std::pair<std::string, std::string>> args = {
      {"model_type", spec.model_type},
      {"vocab_size", std::to_string(spec.vocab_size)},
      {"hard_vocab_limit", "false"},  // a small corpus may hold fewer pieces than asked
      {"character_coverage", "1.0"},
      {"byte_fallback", "true"},      // any byte sequence encodes, so decode(encode(t)) == t
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"unk_id", "0"},
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"pad_id", "-1"},
      {"num_threads", "1"},
      {"input_sentence_size", "0"},   // every training text
      {"minloglevel", "2"},
  };
  const SpmLibrary& lib = SpmLibrary::get();
  std::vector<const char*> texts, keys, values;
  std::vector<size_t> lens;
  for (const auto& t : training_texts) {
    texts.push_back(t.data());
    lens.push_back(t.size());
  }
  for (const auto& [k, v] : args) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  char* buf = nullptr;
  size_t len = 0;
  lib.check(lib.train(texts.data(), lens.data(), texts.size(), keys.data(), values.data(), keys.size(), &buf, &len),
            fmt::format("training {} pieces ({}) failed", spec.vocab_size, spec.model_type));
  std::string proto = lib.take(buf, len);
  return std::make_unique<SentencePieceTokenizer>(spec, std::move(proto), "trained tokenizer");
}

std::unique_ptr<Tokenizer> load_tokenizer(const TokenizerSpec& spec, const std::string& run_dir) {
  if (spec.kind == "bytes") return std::make_unique<ByteTokenizer>();
  const fs::path path = fs::path(run_dir) / kTokenizerFile;
  if (!fs::exists(path))
    throw std::runtime_error(path.string() + " not found: the run's config says tokenizer: sentencepiece, whose "
                             "vocabulary is saved there by training");
  return std::make_unique<SentencePieceTokenizer>(spec, read_text_file(path), path.string());
}

}  // namespace cerebra
