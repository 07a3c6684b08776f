// Bag-of-words baselines of text classification: multinomial naive Bayes and multinomial logistic regression over
// word unigrams and bigrams (lowercased, split on non-alphanumerics; features seen in at least `min_df` training
// texts). Both are one linear model over sparse features, logits = X·W + b with X the (B, V) feature matrix:
// naive Bayes takes W = log P(feature | class) (Lidstone smoothing α) and b = log P(class) in closed form from the
// feature counts; logistic regression learns W and b by Adam on (1 + log tf)·idf features with unit L2 norm, with
// early stopping on the validation loss. The sparse product runs as a bag sum (no (B, V) tensor) and reports its
// FLOPs (2 per stored feature and class) to the FLOP counter.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/types.h>

namespace cerebra {

struct TextBaselineParams {
  int64_t ngrams = 2;           // 1 = unigrams, 2 = unigrams and bigrams
  int64_t min_df = 2;           // a feature is kept when it occurs in at least this many training texts
  double nb_alpha = 0;          // naive Bayes smoothing; 0 = chosen on validation among 0.01, 0.03, 0.1, 0.3, 1
  int64_t logreg_epochs = 30;   // logistic regression: maximum epochs (early stopping on validation loss)
  int64_t logreg_patience = 3;  // epochs without validation improvement before stopping
  int64_t logreg_batch = 512;
  double logreg_lr = 0.02;      // Adam
  double logreg_l2 = 0;         // L2 penalty on W (Adam's weight decay)
  uint64_t seed = 42;           // order of the training examples
};

// Lowercased ASCII alphanumeric runs of a text ("A man-made object" -> a, man, made, object).
std::vector<std::string> word_tokens(const std::string& text);
// The unigrams and, for ngrams >= 2, bigrams ("man made") of a text, in order, with repeats.
std::vector<std::string> word_ngrams(const std::string& text, int64_t ngrams);

class TextLinearClassifier {
 public:
  enum class Method { NaiveBayes, LogisticRegression };
  TextLinearClassifier(Method method, TextBaselineParams params, int64_t n_classes);

  // Learns the feature vocabulary and the weights from the training texts; validation selects α (naive Bayes) or
  // the stopping epoch (logistic regression). Returns what summary.json reports of the fit.
  nlohmann::json fit(const std::vector<std::string>& texts, const std::vector<int64_t>& labels,
                     const std::vector<std::string>& val_texts, const std::vector<int64_t>& val_labels);
  // (B, n_classes) float logits (naive Bayes: log joint probabilities).
  torch::Tensor logits(const std::vector<std::string>& texts) const;
  // Forward FLOPs per example: 2 · (mean stored features per training text) · classes.
  double flops_per_example() const;
  int64_t parameters() const;  // V · classes + classes
  const std::vector<std::string>& features() const { return features_; }

  void save(const std::string& path) const;
  void load(const std::string& path);  // throws naming the file when it is not this method's checkpoint

 private:
  struct Row {  // the stored features of one text: ids and values
    std::vector<int64_t> index;
    std::vector<float> value;
  };
  std::vector<Row> featurize(const std::vector<std::string>& texts) const;
  // logits of the rows `sel` (all when empty) with weights W, b.
  torch::Tensor product(const std::vector<Row>& rows, const std::vector<int64_t>& sel, const torch::Tensor& W,
                        const torch::Tensor& b) const;
  void build_vocabulary(const std::vector<std::string>& texts);
  nlohmann::json fit_naive_bayes(const std::vector<std::string>& texts, const std::vector<int64_t>& labels,
                                 const std::vector<std::string>& val_texts, const std::vector<int64_t>& val_labels);
  nlohmann::json fit_logreg(const std::vector<std::string>& texts, const std::vector<int64_t>& labels,
                            const std::vector<std::string>& val_texts, const std::vector<int64_t>& val_labels);

  Method method_;
  TextBaselineParams params_;
  int64_t n_classes_;
  std::vector<std::string> features_;
  std::unordered_map<std::string, int64_t> index_;
  torch::Tensor idf_;         // (V) logistic regression's feature weights; undefined for naive Bayes
  torch::Tensor W_, b_;       // (V, C), (C)
  double mean_features_ = 0;  // stored features per training text
};

std::string text_method_name(TextLinearClassifier::Method m);

}  // namespace cerebra
