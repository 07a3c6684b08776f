// A C interface to SentencePiece, built as its own shared library (libcerebra_spm.so) and loaded by
// src/data/tokenizer.cpp with dlopen(RTLD_LOCAL | RTLD_DEEPBIND). Debian's libsentencepiece carries its own copy of
// protobuf-lite 3.14, while LibTorch loads the system protobuf 3.21: linked into one executable, the two resolve each
// other's symbols and the process crashes at start-up. Loaded this way, SentencePiece binds to its own copy and
// nothing of it enters the global symbol scope. Strings cross as pointer + length; buffers returned here are freed
// with cerebra_spm_free_buffer. Every function returns 0 on success, or an error message (free it the same way).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

namespace {

char* copy_out(const std::string& s, size_t* len = nullptr) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  if (len) *len = s.size();
  return p;
}

class Texts final : public sentencepiece::SentenceIterator {
 public:
  Texts(const char* const* texts, const size_t* lens, size_t n) : texts_(texts), lens_(lens), n_(n) { load(); }
  bool done() const override { return i_ >= n_; }
  void Next() override {
    ++i_;
    load();
  }
  const std::string& value() const override { return cur_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  void load() {
    if (i_ < n_) cur_.assign(texts_[i_], lens_[i_]);
  }
  const char* const* texts_;
  const size_t* lens_;
  size_t n_, i_ = 0;
  std::string cur_;
};

}  // namespace

extern "C" {

__attribute__((visibility("default"))) char* cerebra_spm_train(const char* const* texts, const size_t* lens, size_t n,
                                                               const char* const* keys, const char* const* values,
                                                               size_t n_args, char** proto, size_t* proto_len) {
  std::unordered_map<std::string, std::string> args;
  for (size_t i = 0; i < n_args; ++i) args[keys[i]] = values[i];
  Texts it(texts, lens, n);
  std::string out;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &out);
  if (!status.ok()) return copy_out(status.ToString());
  *proto = copy_out(out, proto_len);
  return nullptr;
}

__attribute__((visibility("default"))) char* cerebra_spm_load(const char* proto, size_t len, void** handle) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->LoadFromSerializedProto(std::string(proto, len));
  if (!status.ok()) {
    delete sp;
    return copy_out(status.ToString());
  }
  *handle = sp;
  return nullptr;
}

__attribute__((visibility("default"))) void cerebra_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

__attribute__((visibility("default"))) void cerebra_spm_free_buffer(void* p) { std::free(p); }

__attribute__((visibility("default"))) char* cerebra_spm_encode(void* handle, const char* text, size_t len, int** ids,
                                                                size_t* n) {
  std::vector<int> out;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, len), &out);
  if (!status.ok()) return copy_out(status.ToString());
  *ids = static_cast<int*>(std::malloc(std::max<size_t>(1, out.size()) * sizeof(int)));
  std::memcpy(*ids, out.data(), out.size() * sizeof(int));
  *n = out.size();
  return nullptr;
}

__attribute__((visibility("default"))) char* cerebra_spm_decode(void* handle, const int* ids, size_t n, char** text,
                                                                size_t* len) {
  std::string out;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(std::vector<int>(ids, ids + n), &out);
  if (!status.ok()) return copy_out(status.ToString());
  *text = copy_out(out, len);
  return nullptr;
}

__attribute__((visibility("default"))) int cerebra_spm_piece_size(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize();
}

__attribute__((visibility("default"))) char* cerebra_spm_piece(void* handle, int id, size_t* len) {
  return copy_out(static_cast<sentencepiece::SentencePieceProcessor*>(handle)->IdToPiece(id), len);
}

}  // extern "C"
