// Naive Bayes and logistic regression over word n-grams (include/cerebra/models/text_baselines.h).
#include "cerebra/models/text_baselines.h"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/core/flop_counter.h"
#include "cerebra/core/state_archive.h"

namespace cerebra {

std::vector<std::string> word_tokens(const std::string& text) {
  std::vector<std::string> words;
  std::string cur;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 128 && std::isalnum(c)) {
      cur.push_back(static_cast<char>(std::tolower(c)));
    } else if (!cur.empty()) {
      words.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  return words;
}

std::vector<std::string> word_ngrams(const std::string& text, int64_t ngrams) {
  const auto words = word_tokens(text);
  std::vector<std::string> out(words.begin(), words.end());
  if (ngrams >= 2)
    for (size_t i = 0; i + 1 < words.size(); ++i) out.push_back(words[i] + " " + words[i + 1]);
  return out;
}

std::string text_method_name(TextLinearClassifier::Method m) {
  return m == TextLinearClassifier::Method::NaiveBayes ? "nb" : "logreg";
}

TextLinearClassifier::TextLinearClassifier(Method method, TextBaselineParams params, int64_t n_classes)
    : method_(method), params_(params), n_classes_(n_classes) {
  if (params_.ngrams < 1 || params_.ngrams > 2)
    throw std::invalid_argument(fmt::format("text_ngrams must be 1 or 2, got {}", params_.ngrams));
  if (params_.min_df < 1) throw std::invalid_argument(fmt::format("text_min_df must be >= 1, got {}", params_.min_df));
}

void TextLinearClassifier::build_vocabulary(const std::vector<std::string>& texts) {
  std::unordered_map<std::string, int64_t> df;
  for (const auto& t : texts) {
    auto grams = word_ngrams(t, params_.ngrams);
    std::sort(grams.begin(), grams.end());
    grams.erase(std::unique(grams.begin(), grams.end()), grams.end());
    for (auto& g : grams) ++df[g];
  }
  features_.clear();
  for (const auto& [g, n] : df)
    if (n >= params_.min_df) features_.push_back(g);
  std::sort(features_.begin(), features_.end());  // deterministic ids
  index_.clear();
  for (size_t i = 0; i < features_.size(); ++i) index_[features_[i]] = static_cast<int64_t>(i);
  if (features_.empty())
    throw std::runtime_error(fmt::format("{}: no word feature occurs in {} or more training texts (text_min_df)",
                                         text_method_name(method_), params_.min_df));
  if (method_ == Method::LogisticRegression) {  // smoothed idf = log((1 + N) / (1 + df)) + 1
    idf_ = torch::empty({static_cast<int64_t>(features_.size())});
    auto* p = idf_.data_ptr<float>();
    const double N = static_cast<double>(texts.size());
    for (size_t i = 0; i < features_.size(); ++i)
      p[i] = static_cast<float>(std::log((1.0 + N) / (1.0 + static_cast<double>(df[features_[i]]))) + 1.0);
  }
}

std::vector<TextLinearClassifier::Row> TextLinearClassifier::featurize(const std::vector<std::string>& texts) const {
  std::vector<Row> rows(texts.size());
  const float* idf = idf_.defined() ? idf_.data_ptr<float>() : nullptr;
  for (size_t t = 0; t < texts.size(); ++t) {
    std::vector<int64_t> ids;
    for (const auto& g : word_ngrams(texts[t], params_.ngrams)) {
      auto it = index_.find(g);
      if (it != index_.end()) ids.push_back(it->second);
    }
    std::sort(ids.begin(), ids.end());
    Row& r = rows[t];
    for (size_t i = 0; i < ids.size();) {
      size_t j = i;
      while (j < ids.size() && ids[j] == ids[i]) ++j;
      const auto tf = static_cast<float>(j - i);
      r.index.push_back(ids[i]);
      r.value.push_back(idf ? (1.0f + std::log(tf)) * idf[ids[i]] : tf);  // logistic: sublinear tf·idf; NB: counts
      i = j;
    }
    if (idf && !r.value.empty()) {
      float norm = 0;
      for (float v : r.value) norm += v * v;
      norm = std::sqrt(norm);
      for (float& v : r.value) v /= norm;
    }
  }
  return rows;
}

torch::Tensor TextLinearClassifier::product(const std::vector<Row>& rows, const std::vector<int64_t>& sel,
                                            const torch::Tensor& W, const torch::Tensor& b) const {
  const size_t B = sel.empty() ? rows.size() : sel.size();
  std::vector<int64_t> index, offsets(B);
  std::vector<float> value;
  for (size_t i = 0; i < B; ++i) {
    const Row& r = rows[sel.empty() ? i : static_cast<size_t>(sel[i])];
    offsets[i] = static_cast<int64_t>(index.size());
    index.insert(index.end(), r.index.begin(), r.index.end());
    value.insert(value.end(), r.value.begin(), r.value.end());
  }
  const auto nnz = static_cast<int64_t>(index.size());
  auto idx = torch::from_blob(index.data(), {nnz}, torch::kInt64).clone();
  auto off = torch::from_blob(offsets.data(), {static_cast<int64_t>(B)}, torch::kInt64).clone();
  auto val = torch::from_blob(value.data(), {nnz}, torch::kFloat32).clone();
  // Σ_j x_ij · W[j] per row: a bag sum (mode 0) weighted by the feature values; empty rows give zeros.
  auto out = std::get<0>(at::embedding_bag(W, idx, off, false, 0, false, val));
  add_kernel_flops("sparse_linear", 2.0 * static_cast<double>(nnz) * static_cast<double>(W.size(1)));
  return out + b;
}

nlohmann::json TextLinearClassifier::fit(const std::vector<std::string>& texts, const std::vector<int64_t>& labels,
                                         const std::vector<std::string>& val_texts,
                                         const std::vector<int64_t>& val_labels) {
  if (texts.empty() || texts.size() != labels.size())
    throw std::invalid_argument(fmt::format("{}: {} training texts for {} labels", text_method_name(method_),
                                            texts.size(), labels.size()));
  for (auto y : labels)
    if (y < 0 || y >= n_classes_)
      throw std::invalid_argument(fmt::format("{}: label {} outside [0, {})", text_method_name(method_), y, n_classes_));
  build_vocabulary(texts);
  nlohmann::json r = method_ == Method::NaiveBayes ? fit_naive_bayes(texts, labels, val_texts, val_labels)
                                                    : fit_logreg(texts, labels, val_texts, val_labels);
  r["features"] = features_.size();
  r["ngrams"] = params_.ngrams;
  r["min_df"] = params_.min_df;
  r["mean_features_per_text"] = mean_features_;
  return r;
}

namespace {

double accuracy_of(const torch::Tensor& logits, const std::vector<int64_t>& labels) {
  auto am = logits.argmax(1);
  const auto* a = am.data_ptr<int64_t>();
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += a[i] == labels[i];
  return labels.empty() ? 0.0 : static_cast<double>(correct) / static_cast<double>(labels.size());
}

torch::Tensor label_tensor(const std::vector<int64_t>& labels) {
  return torch::tensor(labels, torch::kInt64);
}

}  // namespace

nlohmann::json TextLinearClassifier::fit_naive_bayes(const std::vector<std::string>& texts,
                                                     const std::vector<int64_t>& labels,
                                                     const std::vector<std::string>& val_texts,
                                                     const std::vector<int64_t>& val_labels) {
  const auto rows = featurize(texts);
  const auto V = static_cast<int64_t>(features_.size());
  auto counts = torch::zeros({V, n_classes_}, torch::kFloat64);
  auto prior = torch::zeros({n_classes_}, torch::kFloat64);
  auto* c = counts.data_ptr<double>();
  auto* p = prior.data_ptr<double>();
  double stored = 0;
  for (size_t t = 0; t < rows.size(); ++t) {
    p[labels[t]] += 1;
    for (size_t i = 0; i < rows[t].index.size(); ++i) c[rows[t].index[i] * n_classes_ + labels[t]] += rows[t].value[i];
    stored += static_cast<double>(rows[t].index.size());
  }
  mean_features_ = stored / static_cast<double>(rows.size());
  // Classes absent from training keep prior 0 (log = -inf would poison the argmax); give them one pseudo-count.
  b_ = torch::log((prior + (prior.eq(0).to(torch::kFloat64))) / static_cast<double>(rows.size())).to(torch::kFloat32);
  auto fit_alpha = [&](double alpha) {
    auto num = counts + alpha;
    return (num.log() - num.sum(0, true).log()).to(torch::kFloat32);  // log P(feature | class), (V, C)
  };
  nlohmann::json r = {{"method", "multinomial naive Bayes"}};
  if (params_.nb_alpha > 0 || val_texts.empty()) {
    const double alpha = params_.nb_alpha > 0 ? params_.nb_alpha : 1.0;
    W_ = fit_alpha(alpha);
    r["alpha"] = alpha;
    return r;
  }
  const auto val_rows = featurize(val_texts);
  double best = -1, best_alpha = 0;
  nlohmann::json tried = nlohmann::json::object();
  for (double alpha : {0.01, 0.03, 0.1, 0.3, 1.0}) {
    auto W = fit_alpha(alpha);
    const double acc = accuracy_of(product(val_rows, {}, W, b_), val_labels);
    tried[fmt::format("{}", alpha)] = acc;
    if (acc > best) {
      best = acc;
      best_alpha = alpha;
      W_ = W;
    }
  }
  r["alpha"] = best_alpha;
  r["alpha_val_accuracy"] = tried;
  return r;
}

nlohmann::json TextLinearClassifier::fit_logreg(const std::vector<std::string>& texts, const std::vector<int64_t>& labels,
                                                const std::vector<std::string>& val_texts,
                                                const std::vector<int64_t>& val_labels) {
  const auto rows = featurize(texts);
  const auto val_rows = featurize(val_texts);
  double stored = 0;
  for (const auto& r : rows) stored += static_cast<double>(r.index.size());
  mean_features_ = stored / static_cast<double>(rows.size());
  const auto V = static_cast<int64_t>(features_.size());
  auto W = torch::zeros({V, n_classes_}, torch::requires_grad());
  auto b = torch::zeros({n_classes_}, torch::requires_grad());
  torch::optim::Adam opt({W, b}, torch::optim::AdamOptions(params_.logreg_lr).weight_decay(params_.logreg_l2));
  const auto y = label_tensor(labels), val_y = label_tensor(val_labels);
  std::vector<int64_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(params_.seed);
  const auto batch = static_cast<size_t>(std::max<int64_t>(1, params_.logreg_batch));
  double best_loss = INFINITY;
  int64_t best_epoch = 0, epochs_run = 0, since = 0;
  nlohmann::json history = nlohmann::json::array();
  for (int64_t epoch = 1; epoch <= params_.logreg_epochs; ++epoch) {
    epochs_run = epoch;
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t lo = 0; lo < order.size(); lo += batch) {
      std::vector<int64_t> sel(order.begin() + static_cast<std::ptrdiff_t>(lo),
                               order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), lo + batch)));
      auto loss = torch::cross_entropy_loss(product(rows, sel, W, b), y.index_select(0, torch::tensor(sel)));
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
    if (val_rows.empty()) {  // nothing to stop on: the last epoch is kept
      W_ = W.detach().clone();
      b_ = b.detach().clone();
      best_epoch = epoch;
      continue;
    }
    torch::NoGradGuard g;
    auto logits = product(val_rows, {}, W, b);
    const double val_loss = torch::cross_entropy_loss(logits, val_y).item<double>();
    history.push_back({{"epoch", epoch}, {"val_loss", val_loss}, {"val_accuracy", accuracy_of(logits, val_labels)}});
    if (val_loss < best_loss) {
      best_loss = val_loss;
      best_epoch = epoch;
      since = 0;
      W_ = W.detach().clone();
      b_ = b.detach().clone();
    } else if (++since >= params_.logreg_patience) {
      break;
    }
  }
  return {{"method", "multinomial logistic regression (Adam)"}, {"epochs_run", epochs_run}, {"best_epoch", best_epoch},
          {"best_val_loss", std::isfinite(best_loss) ? nlohmann::json(best_loss) : nlohmann::json()},
          {"lr", params_.logreg_lr}, {"l2", params_.logreg_l2}, {"batch", params_.logreg_batch},
          {"history", history}};
}

torch::Tensor TextLinearClassifier::logits(const std::vector<std::string>& texts) const {
  if (!W_.defined()) throw std::logic_error(text_method_name(method_) + ": predict before fit or load");
  torch::NoGradGuard g;
  return product(featurize(texts), {}, W_, b_);
}

double TextLinearClassifier::flops_per_example() const {
  return 2.0 * mean_features_ * static_cast<double>(n_classes_);
}

int64_t TextLinearClassifier::parameters() const { return W_.defined() ? W_.numel() + b_.numel() : 0; }

void TextLinearClassifier::save(const std::string& path) const {
  torch::serialize::OutputArchive ar;
  ar.write("method", c10::IValue(text_method_name(method_)));
  ar.write("ngrams", c10::IValue(params_.ngrams));
  ar.write("classes", c10::IValue(n_classes_));
  ar.write("mean_features", c10::IValue(mean_features_));
  c10::List<std::string> feats;
  for (const auto& f : features_) feats.push_back(f);
  ar.write("features", c10::IValue(feats));
  ar.write("W", W_);
  ar.write("b", b_);
  if (idf_.defined()) ar.write("idf", idf_);
  ar.save_to(path);
}

void TextLinearClassifier::load(const std::string& path) {
  torch::serialize::InputArchive ar;
  try {
    load_archive(ar, path);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": cannot read the " + text_method_name(method_) + " checkpoint: " + e.what());
  }
  c10::IValue v;
  if (!ar.try_read("method", v) || v.toStringRef() != text_method_name(method_))
    throw std::runtime_error(path + ": not a " + text_method_name(method_) + " checkpoint");
  ar.read("ngrams", v);
  params_.ngrams = v.toInt();
  ar.read("classes", v);
  if (v.toInt() != n_classes_)
    throw std::runtime_error(fmt::format("{}: {} classes, the task has {}", path, v.toInt(), n_classes_));
  ar.read("mean_features", v);
  mean_features_ = v.toDouble();
  ar.read("features", v);
  features_.clear();
  for (const auto& f : v.toListRef()) features_.push_back(f.toStringRef());
  index_.clear();
  for (size_t i = 0; i < features_.size(); ++i) index_[features_[i]] = static_cast<int64_t>(i);
  ar.read("W", W_);
  ar.read("b", b_);
  torch::Tensor idf;
  if (ar.try_read("idf", idf)) idf_ = idf;
  else idf_ = torch::Tensor();
}

}  // namespace cerebra
