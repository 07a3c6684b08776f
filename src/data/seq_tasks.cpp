// Sequence tasks: synthetic generators, the WordNet and character-LM loaders, the task classes and their registry.
// See include/cerebra/data/seq_tasks.h for the layouts.
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/data/seq_tasks.h"
#include "cerebra/data/synthetic_stream.h"
#include "cerebra/data/tokenizer.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform integer in [0, k) from the generator (k > 0).
int64_t uniform(std::mt19937_64& rng, int64_t k) {
  return static_cast<int64_t>(std::uniform_int_distribution<uint64_t>(0, static_cast<uint64_t>(k - 1))(rng));
}

// `count` distinct values of [0, range), in random order (partial Fisher-Yates).
std::vector<int64_t> distinct(std::mt19937_64& rng, int64_t range, int64_t count) {
  std::vector<int64_t> v(static_cast<size_t>(range));
  std::iota(v.begin(), v.end(), 0);
  for (int64_t i = 0; i < count; ++i) std::swap(v[i], v[i + uniform(rng, range - i)]);
  v.resize(static_cast<size_t>(count));
  return v;
}

}  // namespace

uint64_t example_seed(uint64_t seed, Part split, int64_t index) {
  return splitmix64(splitmix64(seed * 4 + static_cast<uint64_t>(split)) ^ static_cast<uint64_t>(index));
}

const std::vector<std::string>& synthetic_task_names() {
  static const std::vector<std::string> names = {"copy", "selective_copy", "mqar", "masked_recall", "induction_heads"};
  return names;
}

bool is_stream_task(const std::string& task) {
  return task == "mqar" || task == "selective_copy" || task == "induction_heads";
}

namespace {

MqarSpec mqar_spec(const SyntheticSpec& s) {
  MqarSpec m;
  m.seq_len = s.n;
  m.vocab_size = s.vocab;
  m.num_kv_pairs = s.n_pairs;
  m.num_queries = s.n_queries;  // 0 = every pair
  m.power_a = s.power_a;
  m.random_non_queries = s.random_non_queries;
  return m;
}

SelectiveCopySpec selective_copy_spec(const SyntheticSpec& s) {
  SelectiveCopySpec c;
  c.seq_len = s.n;
  c.vocab_size = s.vocab;
  c.num_data = s.n_data;
  return c;
}

InductionHeadsSpec induction_spec(const SyntheticSpec& s) {
  InductionHeadsSpec h;
  h.seq_len = s.n;
  h.vocab_size = s.vocab;
  h.num_triggers = s.num_triggers;
  h.num_queries = s.n_queries > 0 ? s.n_queries : 1;
  return h;
}

// The generators' messages in the config's words (num_kv_pairs -> n_pairs, ...).
std::string config_words(std::string m) {
  const std::pair<const char*, const char*> words[] = {
      {"num_kv_pairs", "n_pairs"}, {"num_queries", "n_queries"}, {"num_data", "n_data_tokens"}};
  for (const auto& [from, to] : words)
    for (size_t at = m.find(from); at != std::string::npos; at = m.find(from, at + std::strlen(to)))
      m.replace(at, std::strlen(from), to);
  return m;
}

}  // namespace

void validate_synthetic(const std::string& task, const SyntheticSpec& s) {
  auto fail = [&](const std::string& why) { throw ConfigError("task " + task + ": " + why); };
  if (is_stream_task(task)) {
    try {
      if (task == "mqar") validate_mqar(mqar_spec(s));
      else if (task == "selective_copy") validate_selective_copy(selective_copy_spec(s));
      else validate_induction_heads(induction_spec(s));
    } catch (const std::invalid_argument& e) {
      throw ConfigError(config_words(e.what()));  // "mqar: n_queries must be ..."
    }
    return;
  }
  const int64_t data_vocab = s.vocab - kFirstData;
  if (s.n < 4) fail(fmt::format("seq_len must be >= 4, got {}", s.n));
  if (data_vocab < 2) fail(fmt::format("vocab_size must be >= {} (4 special tokens + 2 data tokens), got {}",
                                       kFirstData + 2, s.vocab));
  if (task == "copy") {
    if (s.n_data < 1) fail(fmt::format("n_data_tokens must be >= 1, got {}", s.n_data));
    if (2 * s.n_data + 1 > s.n)
      fail(fmt::format("n_data_tokens {} needs seq_len >= 2*{}+1 = {}, got {}", s.n_data, s.n_data,
                       2 * s.n_data + 1, s.n));
  } else if (task == "masked_recall") {
    if (!(s.mask_fraction > 0 && s.mask_fraction <= 1))
      fail(fmt::format("mask_fraction must be in (0, 1], got {}", s.mask_fraction));
  } else {
    fail("not a synthetic task");
  }
}

SeqExample make_synthetic_example(const std::string& task, const SyntheticSpec& s, uint64_t seed) {
  if (is_stream_task(task)) {
    StreamExample x = task == "mqar"             ? make_mqar(mqar_spec(s), seed)
                      : task == "selective_copy" ? make_selective_copy(selective_copy_spec(s), seed)
                                                 : make_induction_heads(induction_spec(s), seed);
    return {std::move(x.tokens), std::move(x.targets)};
  }
  std::mt19937_64 rng(seed);
  const int64_t n = s.n, data_vocab = s.vocab - kFirstData;
  SeqExample e;
  e.tokens.assign(static_cast<size_t>(n), kNoise);
  e.targets.assign(static_cast<size_t>(n), kIgnore);
  auto data_token = [&] { return kFirstData + uniform(rng, data_vocab); };
  if (task == "copy") {
    const int64_t L = s.n_data, answer = n - L;  // answers occupy the last L positions; SEP just before
    for (int64_t i = 0; i < L; ++i) {
      const int64_t t = data_token();
      e.tokens[i] = t;
      e.tokens[answer + i] = kBlank;
      e.targets[answer + i] = t;
    }
    e.tokens[answer - 1] = kSep;
  } else if (task == "masked_recall") {
    const int64_t L = (n - 1) / 2;
    const int64_t masked = std::max<int64_t>(1, static_cast<int64_t>(std::llround(s.mask_fraction * L)));
    std::vector<int64_t> a(static_cast<size_t>(L));
    for (auto& t : a) t = data_token();
    for (int64_t i = 0; i < L; ++i) e.tokens[i] = e.tokens[L + 1 + i] = a[i];
    e.tokens[L] = kSep;
    for (int64_t i : distinct(rng, L, std::min(masked, L))) {
      e.tokens[L + 1 + i] = kBlank;
      e.targets[L + 1 + i] = a[i];
    }
  } else {
    throw ConfigError("unknown synthetic task '" + task + "'");
  }
  return e;
}

double mean_train_length(const SyntheticSpec& s) {
  if (s.train_lengths.empty()) return static_cast<double>(s.n);
  double sum = 0;
  for (int64_t L : s.train_lengths) sum += static_cast<double>(L);
  return sum / static_cast<double>(s.train_lengths.size());
}

SyntheticSpec synthetic_at_length(const std::string& task, const SyntheticSpec& s, int64_t length) {
  SyntheticSpec out = s;
  out.n = length;
  out.train_lengths.clear();
  auto scaled = [&](int64_t count) {
    return std::max<int64_t>(1, std::llround(static_cast<double>(count) * static_cast<double>(length) /
                                             static_cast<double>(s.n)));
  };
  out.n_pairs = scaled(s.n_pairs);
  if (task == "mqar" && s.n_queries > 0) out.n_queries = std::min(scaled(s.n_queries), out.n_pairs);
  out.n_data = scaled(s.n_data);
  out.num_triggers = scaled(s.num_triggers);
  return out;
}

uint64_t synthetic_example_key(const TaskSpec& c, Part part, int64_t row) {
  if (!is_stream_task(c.name)) return example_seed(c.seed, part, row);
  if (part == Part::Train) {
    const int64_t B = std::max<int64_t>(1, c.batch_size);
    return stream_key(c.seed, stream::kTrain, row / B, row % B);
  }
  return stream_key(c.seed, static_cast<int>(part), 0, row);
}

int64_t synthetic_part_size(const TaskSpec& c, Part part) {
  switch (part) {
    case Part::Train:
      return is_stream_task(c.name) && c.steps > 0 ? c.steps * std::max<int64_t>(1, c.batch_size) : c.train_examples;
    case Part::Val: return c.val_examples;
    case Part::Test: return c.test_examples;
  }
  return 0;
}

// ---- loaders

std::vector<TextExample> load_wordnet_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open (install the Debian package wordnet-base, or set wordnet_dir)");
  std::vector<TextExample> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.rfind("  ", 0) == 0) continue;  // license header lines start with two spaces
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    std::istringstream fields(line);
    std::string offset, lex;
    if (!(fields >> offset >> lex))
      throw std::runtime_error(where + ": expected 'synset_offset lex_filenum ss_type ...', got '" +
                               line.substr(0, 60) + "'");
    if (offset.find_first_not_of("0123456789") != std::string::npos)
      throw std::runtime_error(where + ": synset_offset '" + offset + "' is not a number");
    if (lex.empty() || lex.size() > 2 || lex.find_first_not_of("0123456789") != std::string::npos)
      throw std::runtime_error(where + ": lex_filenum '" + lex + "' is not a two-digit number");
    const int64_t label = std::stoll(lex);
    if (label > 44) throw std::runtime_error(where + ": lex_filenum " + lex + " is outside 00..44");
    const auto bar = line.find(" | ");
    if (bar == std::string::npos) throw std::runtime_error(where + ": no gloss (missing ' | ' separator)");
    std::string gloss = line.substr(bar + 3);
    // The definition: the gloss before its first quoted usage example.
    std::string def = gloss.substr(0, gloss.find('"'));
    auto end = def.find_last_not_of(" ;\t");
    def = end == std::string::npos ? std::string() : def.substr(0, end + 1);
    if (def.empty()) continue;  // a gloss made only of usage examples: nothing to classify from
    out.push_back({def, label, where});
  }
  return out;
}

std::vector<TextExample> load_wordnet(const std::string& dir) {
  std::vector<TextExample> all;
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {
    auto part = load_wordnet_file((fs::path(dir) / (std::string("data.") + pos)).string());
    all.insert(all.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
  }
  return all;
}

std::string load_lm_text(const std::string& path, int64_t min_bytes) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open (run `cerebra data` to export janeausten.txt)");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto nul = text.find('\0');
  if (nul != std::string::npos) {
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(nul), '\n');
    throw std::runtime_error(fmt::format("{}:{}: NUL byte at offset {}: not a text file", path, line, nul));
  }
  if (static_cast<int64_t>(text.size()) < min_bytes)
    throw std::runtime_error(fmt::format("{}:1: {} bytes of text, need at least {} (seq_len + 1 for each of the "
                                         "train, val and test parts)", path, text.size(), min_bytes));
  return text;
}

std::vector<int64_t> fit_to_length(std::vector<int64_t> tokens, int64_t max_len, bool error_on_long,
                                   const std::string& origin, const std::string& unit, bool* truncated) {
  if (truncated) *truncated = false;
  const auto len = static_cast<int64_t>(tokens.size());
  if (len > max_len) {
    if (error_on_long)
      throw std::runtime_error(fmt::format("{}: text of {} {} exceeds max_len {} (length_policy: error; use "
                                           "length_policy: truncate or a larger max_len)", origin, len, unit, max_len));
    if (truncated) *truncated = true;
    tokens.resize(static_cast<size_t>(max_len));
  }
  if (tokens.empty()) tokens.push_back(0);  // an empty text: one padding token
  return tokens;
}

std::vector<int64_t> byte_tokens(const std::string& text, int64_t max_len, bool error_on_long,
                                 const std::string& origin, bool* truncated) {
  std::vector<int64_t> t(text.size());
  for (size_t i = 0; i < text.size(); ++i) t[i] = static_cast<unsigned char>(text[i]) + 1;
  return fit_to_length(std::move(t), max_len, error_on_long, origin, "bytes", truncated);
}

namespace {

class SyntheticTask final : public Task {
 public:
  explicit SyntheticTask(const TaskSpec& c) : spec_(c) {
    validate_synthetic(c.name, c.synthetic);
    for (Part p : {Part::Train, Part::Val, Part::Test}) sizes_.push_back(synthetic_part_size(c, p));
    for (int i = 0; i < 3; ++i)
      if (sizes_[i] < 1)
        throw ConfigError(fmt::format("task {}: train_examples (or steps × batch_size), val_examples and "
                                      "test_examples must be >= 1", c.name));
    info_ = seq_task_info(c);
    const auto& lengths = c.synthetic.train_lengths;
    if (!lengths.empty() && !is_stream_task(c.name))
      throw ConfigError(fmt::format("train_lengths: task {} trains on a fixed pool of length seq_len; only the "
                                    "streaming tasks (mqar, selective_copy, induction_heads) mix lengths", c.name));
    for (int64_t L : lengths) {
      if (L > c.synthetic.n)
        throw ConfigError(fmt::format("train_lengths: {} is longer than seq_len {} (the lengths mix shorter "
                                      "training batches into the task's own)", L, c.synthetic.n));
      try {
        validate_synthetic(c.name, synthetic_at_length(c.name, c.synthetic, L));
      } catch (const ConfigError& e) {
        throw ConfigError(fmt::format("train_lengths: at length {}: {}", L, e.what()));
      }
    }
  }
  const TaskInfo& info() const override { return info_; }
  int64_t size(Part s) const override { return sizes_[static_cast<int>(s)]; }
  Batch batch(Part split, const std::vector<int64_t>& rows) const override {
    // A training batch of a mixed-length curriculum is at one of train_lengths, chosen by its first example's step.
    const auto& lengths = spec_.synthetic.train_lengths;
    const bool mixed = split == Part::Train && !lengths.empty() && !rows.empty();
    const int64_t step = mixed ? rows[0] / std::max<int64_t>(1, spec_.batch_size) : 0;
    const int64_t length = mixed ? lengths[static_cast<size_t>(step) % lengths.size()] : spec_.synthetic.n;
    const SyntheticSpec shape = mixed ? synthetic_at_length(spec_.name, spec_.synthetic, length) : spec_.synthetic;
    const auto B = static_cast<int64_t>(rows.size()), n = shape.n;
    auto tokens = torch::empty({B, n}, torch::kInt64), y = torch::empty({B, n}, torch::kInt64);
    auto* tp = tokens.data_ptr<int64_t>();
    auto* yp = y.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      SeqExample e = make_synthetic_example(spec_.name, shape, synthetic_example_key(spec_, split, rows[b]));
      std::copy(e.tokens.begin(), e.tokens.end(), tp + b * n);
      std::copy(e.targets.begin(), e.targets.end(), yp + b * n);
    }
    Batch out;
    out.tokens = tokens;
    out.mask = torch::ones({B, n}, torch::kBool);
    out.y = y;
    out.answers = y.ne(kIgnore);  // where each generator asks: the same slots whatever the draw
    return out;
  }
  nlohmann::json describe() const override {
    const SyntheticSpec& s = spec_.synthetic;
    nlohmann::json d = {{"kind", "synthetic"}, {"seq_len", s.n}, {"vocab_size", s.vocab},
                        {"train", sizes_[0]}, {"val", sizes_[1]}, {"test", sizes_[2]}};
    const std::string& t = spec_.name;
    if (t == "copy" || t == "selective_copy") d["n_data_tokens"] = s.n_data;
    if (t == "mqar") {
      const MqarSpec m = mqar_spec(s);
      d.update({{"n_pairs", m.num_kv_pairs}, {"n_queries", mqar_num_queries(m)}, {"power_a", m.power_a},
                {"random_non_queries", m.random_non_queries}});
    }
    if (t == "masked_recall") d["mask_fraction"] = s.mask_fraction;
    if (t == "induction_heads") {
      const InductionHeadsSpec h = induction_spec(s);
      d.update({{"num_triggers", h.num_triggers}, {"n_queries", h.num_queries}});
    }
    if (is_stream_task(t)) {
      d["data"] = spec_.steps > 0 ? "stream: fresh training examples every step (steps × batch_size), fixed "
                                    "validation and test sets"
                                  : "stream: train_examples training examples revisited every epoch, fixed "
                                    "validation and test sets";
      d["steps"] = spec_.steps;
      d["batch_size"] = spec_.batch_size;
      if (!s.train_lengths.empty()) d["train_lengths"] = s.train_lengths;
      d["tokens_seen"] = static_cast<double>(sizes_[0]) * mean_train_length(s);
    } else {
      d["data"] = "pool: train_examples fixed training examples, fixed validation and test sets";
    }
    return d;
  }

 private:
  TaskSpec spec_;
  std::vector<int64_t> sizes_;
  TaskInfo info_;
};

// Shuffled split of `count` items by seed; val/test caps of 0 keep the whole share.
std::vector<std::vector<int64_t>> shuffled_split(int64_t count, double val_fraction, double test_fraction,
                                                 uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(splitmix64(seed ^ 0x5eedULL));
  for (int64_t i = count - 1; i > 0; --i) std::swap(order[i], order[uniform(rng, i + 1)]);
  const auto n_test = static_cast<int64_t>(std::llround(test_fraction * count));
  const auto n_val = static_cast<int64_t>(std::llround(val_fraction * count));
  std::vector<std::vector<int64_t>> parts(3);
  parts[2].assign(order.begin(), order.begin() + n_test);
  parts[1].assign(order.begin() + n_test, order.begin() + n_test + n_val);
  parts[0].assign(order.begin() + n_test + n_val, order.end());
  return parts;
}

class WordnetTask final : public Task {
 public:
  WordnetTask(const TaskSpec& c, const std::string& run_dir) {
    info_ = seq_task_info(c);
    dir_ = c.wordnet_dir;
    std::vector<TextExample> ex = load_wordnet(dir_);
    if (ex.empty()) throw std::runtime_error(dir_ + ": no WordNet synsets found");
    parts_ = shuffled_split(static_cast<int64_t>(ex.size()), c.val_fraction, c.test_fraction, c.seed);
    const int64_t caps[3] = {c.max_rows, c.val_examples, c.test_examples};
    for (int i = 0; i < 3; ++i)
      if (caps[i] > 0 && static_cast<int64_t>(parts_[i].size()) > caps[i]) parts_[i].resize(caps[i]);
    if (parts_[0].empty() || parts_[2].empty())
      throw ConfigError("task wordnet: the split leaves no training or test examples (val_fraction/test_fraction)");
    for (auto& e : ex) {
      texts_.push_back(std::move(e.text));
      labels_.push_back(e.label);
    }
    // The vocabulary is learned from the training part only (or reloaded from the run that learned it).
    if (run_dir.empty()) {
      std::vector<std::string> training;
      for (auto i : parts_[0]) training.push_back(texts_[i]);
      tokenizer_ = train_tokenizer(c.tokenizer, training);
    } else {
      tokenizer_ = load_tokenizer(c.tokenizer, run_dir);
    }
    const std::string unit = c.tokenizer.kind == "bytes" ? "bytes" : "tokens";
    int64_t truncated = 0;
    for (size_t i = 0; i < texts_.size(); ++i) {
      bool t = false;
      tokens_.push_back(fit_to_length(tokenizer_->encode(texts_[i]), info_.n, c.error_on_long, ex[i].origin, unit, &t));
      truncated += t;
      total_bytes_ += static_cast<int64_t>(texts_[i].size());
      total_tokens_ += static_cast<int64_t>(tokens_.back().size());
    }
    if (truncated > 0)
      std::cerr << fmt::format("warning: wordnet: {} of {} glosses are longer than max_len {} {} and were truncated "
                               "(length_policy: truncate)\n", truncated, ex.size(), info_.n, unit);
    truncated_ = truncated;
  }
  const TaskInfo& info() const override { return info_; }
  int64_t size(Part s) const override { return static_cast<int64_t>(parts_[static_cast<int>(s)].size()); }
  int64_t length(Part split, int64_t row) const override {
    return static_cast<int64_t>(tokens_[parts_[static_cast<int>(split)].at(row)].size());
  }
  Batch batch(Part split, const std::vector<int64_t>& rows) const override {
    const auto& part = parts_[static_cast<int>(split)];
    const auto B = static_cast<int64_t>(rows.size());
    size_t len = 1;
    for (auto r : rows) len = std::max(len, tokens_[part.at(r)].size());
    const auto n = static_cast<int64_t>(len);
    auto tokens = torch::zeros({B, n}, torch::kInt64);
    auto mask = torch::zeros({B, n}, torch::kBool);
    auto y = torch::empty({B}, torch::kInt64);
    auto* tp = tokens.data_ptr<int64_t>();
    auto* mp = mask.data_ptr<bool>();
    auto* yp = y.data_ptr<int64_t>();
    Batch out;
    out.text.reserve(rows.size());
    for (int64_t b = 0; b < B; ++b) {
      const auto& t = tokens_[part.at(rows[b])];
      std::copy(t.begin(), t.end(), tp + b * n);
      std::fill(mp + b * n, mp + b * n + static_cast<int64_t>(t.size()), true);
      yp[b] = labels_[part[rows[b]]];
      out.text.push_back(texts_[part[rows[b]]]);
    }
    out.tokens = tokens;
    out.mask = mask;
    out.y = y;
    return out;
  }
  nlohmann::json describe() const override {
    const auto N = static_cast<double>(labels_.size());
    return {{"kind", "text classification"}, {"path", dir_}, {"synsets", labels_.size()},
            {"mean_bytes", static_cast<double>(total_bytes_) / N},
            {"mean_tokens", static_cast<double>(total_tokens_) / N}, {"tokenizer", tokenizer_->describe()},
            {"truncated", truncated_}, {"max_len", info_.n}, {"train", parts_[0].size()}, {"val", parts_[1].size()},
            {"test", parts_[2].size()}};
  }
  void save(const std::string& run_dir) const override { tokenizer_->save(run_dir); }

 private:
  TaskInfo info_;
  std::string dir_;
  std::vector<std::string> texts_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<std::vector<int64_t>> tokens_;
  std::vector<int64_t> labels_;
  std::vector<std::vector<int64_t>> parts_;
  int64_t truncated_ = 0, total_bytes_ = 0, total_tokens_ = 0;
};

std::string lm_path(const TaskSpec& c) {
  return c.data.empty() ? (fs::path(c.data_dir) / "janeausten.txt").string() : c.data;
}

class CharLmTask final : public Task {
 public:
  explicit CharLmTask(const TaskSpec& c) {
    info_ = seq_task_info(c);
    path_ = lm_path(c);
    const int64_t n = info_.n;
    text_ = load_lm_text(path_, 3 * (n + 1));
    const auto total = static_cast<int64_t>(text_.size());
    const auto n_test = std::max<int64_t>(n + 1, static_cast<int64_t>(c.test_fraction * static_cast<double>(total)));
    const auto n_val = std::max<int64_t>(n + 1, static_cast<int64_t>(c.val_fraction * static_cast<double>(total)));
    bounds_ = {{0, total - n_val - n_test}, {total - n_val - n_test, total - n_test}, {total - n_test, total}};
    if (bounds_[0].second - bounds_[0].first < n + 1)
      throw ConfigError(fmt::format("task janeausten: {} leaves fewer than seq_len + 1 = {} bytes for training",
                                    path_, n + 1));
    seed_ = c.seed;
    sizes_[0] = c.train_examples;
    for (int s = 1; s < 3; ++s) {
      const int64_t windows = (bounds_[s].second - bounds_[s].first - 1) / n;
      const int64_t cap = s == 1 ? c.val_examples : c.test_examples;
      sizes_[s] = cap > 0 ? std::min(cap, windows) : windows;
    }
    if (sizes_[0] < 1) throw ConfigError("task janeausten: train_examples must be >= 1");
  }
  const TaskInfo& info() const override { return info_; }
  int64_t size(Part s) const override { return sizes_[static_cast<int>(s)]; }
  Batch batch(Part split, const std::vector<int64_t>& rows) const override {
    const auto B = static_cast<int64_t>(rows.size()), n = info_.n;
    const auto [lo, hi] = bounds_[static_cast<int>(split)];
    auto tokens = torch::empty({B, n}, torch::kInt64), y = torch::empty({B, n}, torch::kInt64);
    auto* tp = tokens.data_ptr<int64_t>();
    auto* yp = y.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      int64_t start;
      if (split == Part::Train) {
        std::mt19937_64 rng(example_seed(seed_, split, rows[b]));
        start = lo + uniform(rng, hi - lo - n);
      } else {
        start = lo + rows[b] * n;  // consecutive windows: every held-out byte predicted once
      }
      for (int64_t i = 0; i < n; ++i) {
        tp[b * n + i] = static_cast<unsigned char>(text_[start + i]);
        yp[b * n + i] = static_cast<unsigned char>(text_[start + i + 1]);
      }
    }
    Batch out;
    out.tokens = tokens;
    out.mask = torch::ones({B, n}, torch::kBool);
    out.y = y;
    return out;
  }
  nlohmann::json describe() const override {
    return {{"kind", "character language model"}, {"path", path_}, {"bytes", text_.size()},
            {"train_bytes", bounds_[0].second - bounds_[0].first}, {"val_bytes", bounds_[1].second - bounds_[1].first},
            {"test_bytes", bounds_[2].second - bounds_[2].first}, {"train", sizes_[0]}, {"val", sizes_[1]},
            {"test", sizes_[2]}};
  }

 private:
  TaskInfo info_;
  std::string path_, text_;
  std::vector<std::pair<int64_t, int64_t>> bounds_;
  int64_t sizes_[3] = {0, 0, 0};
  uint64_t seed_ = 0;
};

std::map<std::string, SeqTaskFactory>& registry() {
  static std::map<std::string, SeqTaskFactory> r;
  return r;
}

bool register_builtin() {
  for (const std::string& t : synthetic_task_names())
    register_seq_task(t, [](const TaskSpec& c, const std::string&) { return std::make_unique<SyntheticTask>(c); });
  register_seq_task("wordnet",
                    [](const TaskSpec& c, const std::string& run_dir) { return std::make_unique<WordnetTask>(c, run_dir); });
  register_seq_task("janeausten", [](const TaskSpec& c, const std::string&) { return std::make_unique<CharLmTask>(c); });
  return true;
}

void ensure_builtin() { static bool done = register_builtin(); (void)done; }

}  // namespace

void register_seq_task(const std::string& name, SeqTaskFactory factory) { registry()[name] = std::move(factory); }

std::vector<std::string> seq_task_names() {
  ensure_builtin();
  std::vector<std::string> out;
  for (const auto& [k, v] : registry()) out.push_back(k);
  return out;
}

bool is_seq_task(const std::string& name) {
  ensure_builtin();
  return registry().count(name) > 0;
}

TaskInfo seq_task_info(const TaskSpec& c) {
  TaskInfo i;
  i.name = c.name;
  if (i.name == "wordnet") {
    i.head = HeadKind::SequenceClassification;
    i.vocab = tokenizer_vocab(c.tokenizer);
    i.has_text = true;
    i.n = c.max_len;
    i.n_classes = 45;
    i.metric = "test_accuracy";
    if (i.n < 1) throw ConfigError(fmt::format("max_len must be >= 1, got {}", i.n));
  } else if (i.name == "janeausten") {
    i.head = HeadKind::CausalLM;
    i.vocab = 256;
    i.n = c.synthetic.n;
    i.n_classes = 256;
    i.needs_causal = true;
    i.metric = "test_bits_per_char";
    i.higher_is_better = false;
    if (i.n < 1) throw ConfigError(fmt::format("seq_len must be >= 1, got {}", i.n));
  } else if (is_seq_task(i.name)) {
    i.head = HeadKind::TokenClassification;
    i.vocab = c.synthetic.vocab;
    i.n = c.synthetic.n;
    i.n_classes = i.vocab;
    i.metric = "test_accuracy";
    // Each generator asks at a fixed number of positions: count them in one example (the head runs there only).
    const SeqExample e = make_synthetic_example(c.name, c.synthetic, 0);
    i.answers = std::count_if(e.targets.begin(), e.targets.end(), [](int64_t t) { return t != kIgnore; });
  } else {
    throw ConfigError("'" + i.name + "' is not a sequence task");
  }
  return i;
}

std::unique_ptr<Task> make_seq_task(const TaskSpec& config, const std::string& run_dir) {
  ensure_builtin();
  const std::string& name = config.name;
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& [k, v] : registry()) known += (known.empty() ? "" : ", ") + k;
    throw ConfigError("unknown sequence task '" + name + "'; available: " + known);
  }
  return it->second(config, run_dir);
}

}  // namespace cerebra
