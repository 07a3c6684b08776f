#include "cerebra/core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <system_error>
#include <nlohmann/json.hpp>
#include <sstream>

namespace cerebra {

namespace {

using VT = ValueType;

std::vector<KeySpec> build_schema() {
  return {
      // ---- task and data
      {"task", VT::String, "cps1988", "task: a named tabular data set (cps1988, stackoverflow), csv (any CSV file via "
       "`data`), or a sequence task: copy, selective_copy, mqar, masked_recall, induction_heads (synthetic), wordnet "
       "(gloss -> lexicographer category), janeausten (character LM)",
       {"cps1988", "stackoverflow", "csv", "copy", "selective_copy", "mqar", "masked_recall", "induction_heads",
        "wordnet", "janeausten"},
       "data"},
      {"data", VT::String, "", "CSV file; empty = the task's file in data_dir", {}, "data"},
      {"data_dir", VT::String, "data", "directory holding exported data sets (see `cerebra data`)", {}, "data"},
      {"target", VT::String, "", "target column; empty = the task's default", {}, "data"},
      {"target_transform", VT::String, "", "transform of the target before training; empty = task default",
       {"", "none", "log"}, "data"},
      {"categorical", VT::String, "", "comma-separated columns forced categorical (others are inferred)", {}, "data"},
      {"numeric", VT::String, "", "comma-separated columns forced numeric (others are inferred)", {}, "data"},
      {"drop", VT::String, "", "comma-separated columns to ignore", {}, "data"},
      {"max_rows", VT::Int, "0", "use only the first N rows (0 = all)", {}, "data"},
      {"val_fraction", VT::Float, "0.1", "share of rows for validation (early stopping)", {}, "data"},
      {"test_fraction", VT::Float, "0.2", "share of rows held out for the test metrics", {}, "data"},
      // ---- sequence tasks (task: copy, selective_copy, mqar, masked_recall, wordnet, janeausten)
      {"seq_len", VT::Int, "256", "synthetic tasks and janeausten: tokens per example n", {}, "task"},
      {"vocab_size", VT::Int, "64", "synthetic tasks: vocabulary, including the 4 special tokens (pad, noise, sep, "
       "blank); wordnet with tokenizer sentencepiece: the number of pieces (at least 320)", {}, "task"},
      {"n_data_tokens", VT::Int, "16", "copy, selective_copy: tokens to reproduce", {}, "task"},
      {"n_pairs", VT::Int, "16", "mqar: key-value pairs per example", {}, "task"},
      {"n_queries", VT::Int, "0", "mqar: queries per example (0 = n_pairs); induction_heads: distinct triggers "
       "queried at the end (0 = 1)", {}, "task"},
      {"mask_fraction", VT::Float, "0.15", "masked_recall: share of the repeated tokens that are masked", {}, "task"},
      {"train_examples", VT::Int, "20000", "copy, masked_recall and janeausten: training pool (examples, generated "
       "from the seed); mqar, selective_copy, induction_heads: training examples per epoch when steps = 0 (with "
       "steps, fresh examples every step: steps x batch_size)", {}, "task"},
      {"val_examples", VT::Int, "256", "sequence tasks: validation examples (text: cap on the split, 0 = all)", {},
       "task"},
      {"test_examples", VT::Int, "1000", "sequence tasks: test examples (text: cap on the split, 0 = all)", {},
       "task"},
      {"steps", VT::Int, "0", "sequence tasks: train for this many optimizer steps (0 = epochs over the pool); "
       "warm-up is capped at 10% of training", {}, "task"},
      {"max_len", VT::Int, "256", "wordnet: longest gloss in tokens (see length_policy)", {}, "task"},
      {"length_policy", VT::String, "truncate", "text longer than max_len: truncate (with a warning) or error",
       {"truncate", "error"}, "task"},
      {"wordnet_dir", VT::String, "/usr/share/wordnet", "wordnet: directory of data.{noun,verb,adj,adv} (Debian "
       "package wordnet-base)", {}, "task"},
      {"tokenizer", VT::String, "bytes", "wordnet: tokens of the text: bytes, or sentencepiece subwords learned from the "
       "training split only (vocab_size pieces; saved as tokenizer.model in the run)", {"bytes", "sentencepiece"},
       "task"},
      {"sentencepiece_model", VT::String, "unigram", "tokenizer sentencepiece: the segmentation model",
       {"unigram", "bpe"}, "task"},
      // ---- model
      {"model", VT::String, "transformer",
       "model: ols, xgboost, mlp, or a sequence model over feature tokens (transformer, lstm, and every registered "
       "sequence mixer); text tasks also nb (naive Bayes) and logreg (logistic regression) over word n-grams", {}, "model"},
      {"d_model", VT::Int, "64", "token width d of sequence models", {}, "model"},
      {"n_layers", VT::Int, "2", "number of blocks (sequence models) or hidden layers (mlp)", {}, "model"},
      {"n_heads", VT::Int, "4", "attention heads", {}, "model"},
      {"ffn_mult", VT::Int, "2", "feed-forward width = ffn_mult * d_model (0 = no feed-forward block)", {}, "model"},
      {"tie_embeddings", VT::Bool, "false", "sequence models whose head predicts tokens (mqar, selective_copy, "
       "induction_heads, copy, masked_recall, janeausten): the output layer reuses the input embedding's weights "
       "(Vaswani et al. 2017, 3.4: embedding initialised N(0, 1/d) and scaled by sqrt(d) on input), so a value "
       "token read from the context is scored against its own embedding", {}, "model"},
      {"mlp_hidden", VT::Int, "256", "hidden width of the mlp", {}, "model"},
      {"dropout", VT::Float, "0.1", "dropout rate", {}, "model"},
      // ---- training
      {"epochs", VT::Int, "30", "maximum training epochs", {}, "training"},
      {"batch_size", VT::Int, "128", "training batch size", {}, "training"},
      {"eval_batch_size", VT::Int, "1024", "batch size for validation and test", {}, "training"},
      {"lr", VT::Float, "1e-3", "peak learning rate (AdamW)", {}, "training"},
      {"weight_decay", VT::Float, "1e-4", "AdamW weight decay", {}, "training"},
      {"warmup_epochs", VT::Float, "1", "linear learning-rate warm-up, in epochs (fractions allowed)", {}, "training"},
      {"lr_schedule", VT::String, "cosine", "decay after warm-up", {"cosine", "linear", "constant"}, "training"},
      {"min_lr_ratio", VT::Float, "0.05", "final learning rate as a share of lr", {}, "training"},
      {"patience", VT::Int, "6", "early stopping: epochs without validation improvement (0 = off)", {}, "training"},
      {"grad_clip", VT::Float, "1.0", "clip the global gradient norm (0 = off)", {}, "training"},
      {"seed", VT::Int, "42", "seed of the split, initialisation, shuffling and dropout", {}, "training"},
      {"checkpoint_every", VT::Int, "500",
       "also write the resume checkpoint (resume.pt, always written at each epoch's end) every N optimizer steps "
       "inside an epoch (0 = at epoch ends only)", {}, "training"},
      {"group_by_length", VT::Bool, "false",
       "text tasks: batches of glosses of similar length (each window of 50 batches of the shuffled order sorted by "
       "length, the batches shuffled), so a batch pads little; the same examples every epoch, in another order",
       {}, "training"},
      {"log_every", VT::Int, "0",
       "every N optimizer steps inside an epoch, validate and append a line to steps.jsonl (step, train loss since "
       "the last line, validation loss, lr, and the compute objective's lambda, tau and realised FLOPs), and print it "
       "(0 = epoch ends only; metrics.jsonl keeps one line per epoch)", {}, "training"},
      {"nan_policy", VT::String, "stop",
       "a NaN or inf in the loss or the gradients: stop (the run ends with an error naming the epoch and step; the "
       "last good checkpoint is kept) or skip the step (no update) up to nan_skip_limit times",
       {"stop", "skip"}, "training"},
      {"nan_skip_limit", VT::Int, "10", "nan_policy skip: the run stops when more steps than this were skipped", {},
       "training"},
      {"threads", VT::Int, "0", "intra-op threads (0 = the cores idle at the start; a count is used as given)", {}, "runtime"},
      {"allow_slow_blas", VT::Bool, "false", "run even when LibTorch is not using OpenBLAS", {}, "runtime"},
      // ---- compute as an objective (the Cerebra layer's own keys are registered with the mixer)
      {"tau", VT::Float, "1.0", "cerebra: gate temperature when the router is switched on", {}, "compute"},
      {"tau_min", VT::Float, "0.3", "cerebra: temperature reached at the end of the lambda ramp", {}, "compute"},
      {"lambda", VT::Float, "0", "compute penalty lambda_T of J = L + lambda C (C: expected FLOPs / dense "
       "Transformer FLOPs of the same shape; for padded text, at the examples' real lengths)", {}, "compute"},
      {"lambda0", VT::Float, "0", "compute penalty lambda_0 when the router is switched on", {}, "compute"},
      {"warm_epochs", VT::Float, "0", "recipe: dense warm-up epochs (every token on the full path, lambda = 0); "
       "fractions allowed: with a step budget (one epoch) 0.2 = the first 20% of the steps", {}, "compute"},
      {"lambda_ramp_epochs", VT::Float, "0", "recipe: epochs of the linear ramp lambda_0 -> lambda (and tau -> "
       "tau_min); whole-epoch schedules change at epoch starts, a fractional one at every step", {}, "compute"},
      // ---- compute-aware sampler (include/cerebra/sampler.h)
      {"sampler", VT::String, "uniform",
       "training examples per epoch: uniform (seeded shuffles) or compute_aware (p ~ exp(beta rho - gamma C) with a "
       "uniform floor, from sampler_start_epoch); true = compute_aware, false = uniform",
       {"uniform", "compute_aware", "true", "false"}, "sampler"},
      {"sampler_beta", VT::Float, "0.1",
       "sampler: weight beta of the informativeness rho (EMA loss / its mean; losses are often heavy-tailed, so a "
       "large beta puts most of the mass on a few examples: watch sampler_ess)", {}, "sampler"},
      {"sampler_gamma", VT::Float, "1.0", "sampler: weight gamma of the compute estimate C (relative to dense)", {},
       "sampler"},
      {"sampler_floor", VT::Float, "0.1", "sampler: uniform share f in [0, 1]; every example keeps p >= f/N", {},
       "sampler"},
      {"sampler_start_epoch", VT::Int, "1", "sampler: first epoch drawn by the sampler (earlier epochs: shuffles)", {},
       "sampler"},
      {"sampler_ema", VT::Float, "0.9", "sampler: decay a of the loss average rho <- a rho + (1 - a) loss", {},
       "sampler"},
      // ---- structured pruning (include/cerebra/pruning.h)
      {"prune_start_epoch", VT::Int, "0", "pruning: first epoch E_p that ends with a pruning step (0 = off)", {},
       "pruning"},
      {"prune_target", VT::Float, "0", "pruning: share of each kind's units removed in the end, in [0, 1)", {},
       "pruning"},
      {"prune_epochs", VT::Int, "1", "pruning: epochs of the linear ramp to prune_target (one step per epoch)", {},
       "pruning"},
      {"prune_kinds", VT::String, "heads,ffn",
       "pruning: comma-separated structures to prune: heads (attention / Cerebra full path), ffn (feed-forward "
       "units), channels (cnn mixer)", {}, "pruning"},
      // ---- gradient-boosted trees
      {"text_ngrams", VT::Int, "2", "nb, logreg: word n-grams, 1 = unigrams, 2 = unigrams and bigrams", {},
       "text baselines"},
      {"text_min_df", VT::Int, "2", "nb, logreg: keep word features seen in at least this many training texts", {},
       "text baselines"},
      {"nb_alpha", VT::Float, "0", "nb: Lidstone smoothing; 0 = chosen on validation among 0.01, 0.03, 0.1, 0.3, 1",
       {}, "text baselines"},
      {"logreg_epochs", VT::Int, "30", "logreg: maximum epochs (early stopping on validation loss)", {},
       "text baselines"},
      {"logreg_patience", VT::Int, "3", "logreg: epochs without validation improvement before stopping", {},
       "text baselines"},
      {"logreg_batch", VT::Int, "512", "logreg: mini-batch size", {}, "text baselines"},
      {"logreg_lr", VT::Float, "0.02", "logreg: Adam learning rate", {}, "text baselines"},
      {"logreg_l2", VT::Float, "0", "logreg: L2 penalty on the weights (Adam weight decay)", {}, "text baselines"},
      {"xgb_rounds", VT::Int, "600", "xgboost: maximum boosting rounds (early stopping on validation)", {}, "xgboost"},
      {"xgb_max_depth", VT::Int, "6", "xgboost: tree depth", {}, "xgboost"},
      {"xgb_eta", VT::Float, "0.05", "xgboost: learning rate", {}, "xgboost"},
      {"xgb_subsample", VT::Float, "0.8", "xgboost: row subsample per tree", {}, "xgboost"},
      // ---- quantisation (include/cerebra/quant.h)
      {"qat", VT::Bool, "false", "quantisation-aware training: 8-bit fake quantisation of the Linear layers (weights "
       "per output channel, symmetric; activations per tensor, asymmetric, EMA ranges), straight-through", {}, "quant"},
      {"qat_start_epoch", VT::Int, "1", "QAT: first epoch with fake quantisation (E_q; earlier epochs are fp32 and "
       "not selectable as best)", {}, "quant"},
      {"qat_bits", VT::Int, "8", "QAT: bits of weights and activations (2..8)", {}, "quant"},
      {"qat_ema", VT::Float, "0.99", "QAT: EMA factor of the tracked activation ranges", {}, "quant"},
      {"int8", VT::Bool, "false", "set by `cerebra export --int8`: the run's Linear layers run int8 (model_int8.pt)",
       {}, "quant"},
      {"int8_engine", VT::String, "onednn", "int8: LibTorch quantised engine", {"onednn", "qnnpack"}, "quant"},
      {"int8_activations", VT::String, "dynamic", "int8: activation quantisation, per call (dynamic) or with the "
       "tracked ranges (static)", {"dynamic", "static"}, "quant"},
  };
}

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string type_name(VT t) {
  switch (t) {
    case VT::Int: return "an integer";
    case VT::Float: return "a number";
    case VT::String: return "a string";
    case VT::Bool: return "true or false";
  }
  return "?";
}

// True when `s` is well-formed UTF-8 (what a run's config.yaml can hold and read back unchanged).
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// Validates `value` for `spec`; returns the normalised text or throws ConfigError.
std::string normalise(const KeySpec& spec, const std::string& raw, const std::string& origin) {
  std::string v = trim(raw);
  auto fail = [&](const std::string& why) {
    throw ConfigError(origin + ": key '" + spec.name + "' " + why);
  };
  switch (spec.type) {
    case VT::Int: {
      if (v.empty()) fail("expects " + type_name(spec.type) + ", got an empty value");
      char* end = nullptr;
      errno = 0;
      long long x = std::strtoll(v.c_str(), &end, 10);
      // The whole text must be the number (a NUL byte inside is not its end).
      if (end != v.c_str() + v.size() || errno != 0) fail("expects " + type_name(spec.type) + ", got '" + v + "'");
      return std::to_string(x);
    }
    case VT::Float: {
      char* end = nullptr;
      errno = 0;
      double x = std::strtod(v.c_str(), &end);
      // ERANGE: beyond double's range or below its normal numbers (which std::stod, reading it back, refuses).
      if (v.empty() || end != v.c_str() + v.size() || !std::isfinite(x) || errno == ERANGE)
        fail("expects " + type_name(spec.type) + ", got '" + v + "'");
      return v;
    }
    case VT::Bool: {
      std::string l = v;
      std::transform(l.begin(), l.end(), l.begin(), ::tolower);
      if (l == "true" || l == "1" || l == "yes" || l == "on") return "true";
      if (l == "false" || l == "0" || l == "no" || l == "off") return "false";
      fail("expects " + type_name(spec.type) + ", got '" + v + "'");
      return v;
    }
    case VT::String: {
      if (!valid_utf8(v)) fail("expects UTF-8 text, got bytes that are not");
      if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end()) {
        std::string c;
        for (const auto& ch : spec.choices) c += (c.empty() ? "" : ", ") + (ch.empty() ? std::string("\"\"") : ch);
        fail("must be one of " + c + "; got '" + v + "'");
      }
      return v;
    }
  }
  return v;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<KeySpec>& registered_keys() {
  static std::vector<KeySpec> keys;  // constructed on first use: safe during static initialisation
  return keys;
}
bool& schema_built() {
  static bool built = false;
  return built;
}

}  // namespace

void register_config_keys(const std::vector<KeySpec>& keys) {
  if (schema_built()) throw std::logic_error("register_config_keys: the config schema is already in use");
  auto& reg = registered_keys();
  for (const auto& k : keys) {
    auto same = std::find_if(reg.begin(), reg.end(), [&](const KeySpec& r) { return r.name == k.name; });
    if (same == reg.end()) {
      reg.push_back(k);
      continue;
    }
    if (same->type != k.type || same->default_value != k.default_value)
      throw std::logic_error("config key '" + k.name + "' is registered twice with different types or defaults");
    if (same->group.find(k.group) == std::string::npos) same->group += ", " + k.group;
  }
}

const std::vector<KeySpec>& Config::schema() {
  static const std::vector<KeySpec> s = [] {
    std::vector<KeySpec> all = build_schema();
    for (const auto& k : registered_keys()) {
      for (const auto& b : all)
        if (b.name == k.name) throw std::logic_error("config key '" + k.name + "' is registered twice");
      all.push_back(k);
    }
    schema_built() = true;
    return all;
  }();
  return s;
}

const KeySpec* Config::find_key(const std::string& name) {
  for (const auto& k : schema())
    if (k.name == name) return &k;
  return nullptr;
}

std::string describe_unknown_key(const std::string& name) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& k : Config::schema()) scored.emplace_back(edit_distance(name, k.name), k.name);
  std::sort(scored.begin(), scored.end());
  std::string msg = "unknown key '" + name + "'";
  if (!scored.empty() && scored[0].first <= std::max<size_t>(2, name.size() / 3))
    msg += " (did you mean '" + scored[0].second + "'?)";
  msg += ". Valid keys:";
  for (const auto& k : Config::schema()) msg += " " + k.name;
  return msg;
}

Config::Config() {
  for (const auto& k : schema()) values_[k.name] = k.default_value;
}

void Config::set(const std::string& key, const std::string& value, const std::string& origin) {
  const KeySpec* spec = find_key(key);
  if (spec == nullptr) throw ConfigError(origin + ": " + describe_unknown_key(key));
  values_[key] = normalise(*spec, value, origin);
}

void Config::load_yaml_file(const std::string& path) { load_yaml_file_depth(path, 0); }

void Config::load_yaml_file_depth(const std::string& path, int depth) {
  if (depth > 16) throw ConfigError(path + ": `base:` chain deeper than 16 files (a cycle?)");
  std::error_code ec;  // a name the system refuses (too long, a file used as a directory) is an error, not a throw
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status))
    throw ConfigError(path + (ec && ec != std::errc::no_such_file_or_directory
                                  ? ": cannot open config file (" + ec.message() + ")"
                                  : std::string(": config file not found")));
  if (!std::filesystem::is_regular_file(status)) throw ConfigError(path + ": not a regular file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
  if (root.IsNull()) return;  // empty file
  if (!root.IsMap()) throw ConfigError(path + ": expected a mapping of key: value at the top level");
  for (const auto& kv : root)
    if (!kv.first.IsScalar())
      throw ConfigError(path + ":" + std::to_string(kv.first.Mark().line + 1) + ": a key must be a plain name");
  if (root["base"]) {
    if (!root["base"].IsScalar()) throw ConfigError(path + ": `base:` expects a file name");
    auto base = std::filesystem::path(path).parent_path() / root["base"].as<std::string>();
    load_yaml_file_depth(base.string(), depth + 1);
  }
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    if (key == "base") continue;
    std::string origin = path + ":" + std::to_string(kv.first.Mark().line + 1);
    if (!kv.second.IsScalar() && !kv.second.IsNull()) {
      if (kv.second.IsSequence()) {  // a list is accepted for comma-separated string keys
        const KeySpec* spec = find_key(key);
        if (spec != nullptr && spec->type == VT::String && spec->choices.empty()) {
          std::string joined;
          for (const auto& item : kv.second) {
            if (!item.IsScalar()) throw ConfigError(origin + ": key '" + key + "' expects a list of plain values");
            joined += (joined.empty() ? "" : ",") + item.as<std::string>();
          }
          set(key, joined, origin);
          continue;
        }
      }
      if (find_key(key) == nullptr) throw ConfigError(origin + ": " + describe_unknown_key(key));
      throw ConfigError(origin + ": key '" + key + "' expects a single value, got a nested structure");
    }
    set(key, kv.second.IsNull() ? "" : kv.second.as<std::string>(), origin);
  }
}

int64_t Config::get_int(const std::string& key) const { return std::stoll(get_string(key)); }
double Config::get_float(const std::string& key) const { return std::stod(get_string(key)); }
bool Config::get_bool(const std::string& key) const { return get_string(key) == "true"; }

const std::string& Config::get_string(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) throw std::logic_error("Config: no key '" + key + "' in the schema");
  return it->second;
}

std::vector<std::string> Config::get_list(const std::string& key) const {
  std::vector<std::string> out;
  std::stringstream ss(get_string(key));
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string Config::to_yaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& k : schema()) {
    out << YAML::Key << k.name << YAML::Value;
    const std::string& v = values_.at(k.name);
    if (k.type == VT::String)
      out << YAML::DoubleQuoted << v;
    else
      out << v;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

nlohmann::json Config::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& k : schema()) {
    const std::string& v = values_.at(k.name);
    switch (k.type) {
      case VT::Int: j[k.name] = std::stoll(v); break;
      case VT::Float: j[k.name] = std::stod(v); break;
      case VT::Bool: j[k.name] = (v == "true"); break;
      case VT::String: j[k.name] = v; break;
    }
  }
  return j;
}

std::vector<std::string> Config::differences(const Config& other) const {
  std::vector<std::string> out;
  for (const auto& k : schema()) {
    const std::string& a = values_.at(k.name);
    const std::string& b = other.values_.at(k.name);
    if (a != b) out.push_back(k.name + ": " + (a.empty() ? "\"\"" : a) + " -> " + (b.empty() ? "\"\"" : b));
  }
  return out;
}

std::map<std::string, std::string> Config::changed() const {
  std::map<std::string, std::string> out;
  for (const auto& k : schema())
    if (values_.at(k.name) != k.default_value) out[k.name] = values_.at(k.name);
  return out;
}

}  // namespace cerebra
