// The task interface's defaults by head (loss, metrics), and the factory over sequence and tabular tasks.
#include "cerebra/data/task.h"

#include <torch/torch.h>

#include <cmath>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/data/seq_tasks.h"
#include "cerebra/data/tabular.h"

namespace cerebra {

std::string head_kind_name(HeadKind k) {
  switch (k) {
    case HeadKind::TokenClassification: return "token_classification";
    case HeadKind::SequenceClassification: return "sequence_classification";
    case HeadKind::CausalLM: return "causal_lm";
    case HeadKind::Regression: return "regression";
  }
  return "?";
}

PredictionRows prediction_rows(const torch::Tensor& pred, const Batch& b) {
  TORCH_CHECK(b.y.defined() && b.y.dim() == 2, "token-level predictions need targets of shape (B, n), got ",
              b.y.defined() ? b.y.sizes() : c10::IntArrayRef{});
  const int64_t B = b.y.size(0), n = b.y.size(1);
  PredictionRows r;
  if (pred.dim() == 3) {  // every position
    TORCH_CHECK(pred.size(0) == B && pred.size(1) == n, "predictions ", pred.sizes(), " do not match targets ",
                b.y.sizes());
    r.logits = pred.reshape({-1, pred.size(-1)});
    r.y = b.y.reshape({-1});
    r.example = torch::arange(B).repeat_interleave(n);
    return r;
  }
  TORCH_CHECK(pred.dim() == 2 && b.answers.defined() && b.answers.sizes() == b.y.sizes(),
              "predictions of shape ", pred.sizes(), " need the batch's answer positions (B, n) = ", b.y.sizes());
  auto where = b.answers.nonzero();  // (K, 2): example, position
  TORCH_CHECK(pred.size(0) == where.size(0), "predictions for ", pred.size(0), " positions, but the batch asks at ",
              where.size(0));
  r.logits = pred;
  r.y = b.y.masked_select(b.answers);
  r.example = where.select(1, 0).contiguous();
  return r;
}

torch::Tensor Task::loss(const torch::Tensor& pred, const Batch& b) const {
  switch (info().head) {
    case HeadKind::Regression: return torch::mse_loss(pred.reshape({-1}), b.y);
    case HeadKind::SequenceClassification: return torch::cross_entropy_loss(pred, b.y);
    default: {
      const PredictionRows r = prediction_rows(pred, b);
      return torch::cross_entropy_loss(r.logits, r.y, {}, at::Reduction::Mean, kIgnore);
    }
  }
}

torch::Tensor Task::per_example_loss(const torch::Tensor& pred, const Batch& b) const {
  switch (info().head) {
    case HeadKind::Regression: return (pred.reshape({-1}) - b.y).pow(2);
    case HeadKind::SequenceClassification: return torch::cross_entropy_loss(pred, b.y, {}, at::Reduction::None);
    default: {  // the mean over the example's answer positions
      const PredictionRows r = prediction_rows(pred, b);
      auto per_row = torch::cross_entropy_loss(r.logits, r.y, {}, at::Reduction::None, kIgnore);
      auto zeros = torch::zeros({b.y.size(0)}, per_row.options());
      auto count = zeros.index_add(0, r.example, r.y.ne(kIgnore).to(per_row.scalar_type()));
      return zeros.index_add(0, r.example, per_row) / count.clamp_min(1.0);
    }
  }
}

nlohmann::json Task::summary_fields() const { return nlohmann::json::object(); }

std::string Task::log_line() const {
  const TaskInfo& i = info();
  return fmt::format("task {} ({}): n={}, vocab={}, {} train / {} val / {} test examples", i.name,
                     head_kind_name(i.head), i.n, i.vocab, size(Part::Train), size(Part::Val), size(Part::Test));
}

nlohmann::json Task::describe_val(double val_loss) const {
  if (info().head == HeadKind::CausalLM) return {{"val_bits_per_char", val_loss / std::log(2.0)}};
  return nlohmann::json::object();
}

namespace {

class ClassificationMetrics final : public MetricSink {
 public:
  ClassificationMetrics(HeadKind head, int64_t n_classes, int64_t examples)
      : head_(head), examples_(examples), tp_(static_cast<size_t>(n_classes)), fp_(tp_.size()), fn_(tp_.size()) {}

  void add(const torch::Tensor& pred, const Batch& b) override {
    if (head_ == HeadKind::SequenceClassification) {
      loss_sum_ += torch::cross_entropy_loss(pred, b.y, {}, at::Reduction::Sum).item<double>();
      auto am = pred.argmax(-1);
      auto* a = am.data_ptr<int64_t>();
      auto* y = b.y.data_ptr<int64_t>();
      for (int64_t i = 0; i < am.size(0); ++i) {
        if (a[i] == y[i]) ++tp_[a[i]], ++correct_;
        else ++fp_[a[i]], ++fn_[y[i]];
      }
      counted_ += static_cast<double>(am.size(0));
      return;
    }
    const PredictionRows r = prediction_rows(pred, b);
    loss_sum_ += torch::cross_entropy_loss(r.logits, r.y, {}, at::Reduction::Sum, kIgnore).item<double>();
    auto valid = r.y.ne(kIgnore);
    auto right = r.logits.argmax(-1).eq(r.y).logical_and(valid);
    correct_ += right.sum().item<double>();
    counted_ += valid.sum().item<double>();
    // An example is an exact match when every one of its answers is right.
    auto zeros = torch::zeros({b.y.size(0)}, torch::kInt64);
    auto right_of = zeros.index_add(0, r.example, right.to(torch::kInt64));
    auto asked_of = zeros.index_add(0, r.example, valid.to(torch::kInt64));
    exact_ += right_of.eq(asked_of).sum().item<double>();
  }

  nlohmann::json result(const std::string& prefix) const override {
    nlohmann::json m;
    const double loss = loss_sum_ / std::max(counted_, 1.0);
    m[prefix + "_loss"] = loss;
    m[prefix + "_accuracy"] = correct_ / std::max(counted_, 1.0);
    if (head_ == HeadKind::CausalLM) {
      m[prefix + "_bits_per_char"] = loss / std::log(2.0);
      m[prefix + "_chars"] = counted_;
    }
    if (head_ == HeadKind::TokenClassification) {
      m[prefix + "_exact_match"] = exact_ / static_cast<double>(std::max<int64_t>(examples_, 1));
      m[prefix + "_answers"] = counted_;
    }
    if (head_ == HeadKind::SequenceClassification) {
      // Macro-F1 over the classes present in the labels or the predictions.
      double f1_sum = 0;
      int classes = 0;
      for (size_t c = 0; c < tp_.size(); ++c) {
        if (tp_[c] + fp_[c] + fn_[c] == 0) continue;
        f1_sum += 2.0 * tp_[c] / static_cast<double>(2 * tp_[c] + fp_[c] + fn_[c]);
        ++classes;
      }
      m[prefix + "_macro_f1"] = classes ? f1_sum / classes : 0.0;
      m[prefix + "_examples"] = counted_;
    }
    return m;
  }

 private:
  HeadKind head_;
  int64_t examples_;
  double loss_sum_ = 0, correct_ = 0, counted_ = 0, exact_ = 0;
  std::vector<int64_t> tp_, fp_, fn_;
};

}  // namespace

std::unique_ptr<MetricSink> classification_metrics(HeadKind head, int64_t n_classes, int64_t examples) {
  if (head == HeadKind::Regression) throw std::logic_error("classification_metrics: a regression head");
  return std::make_unique<ClassificationMetrics>(head, n_classes, examples);
}

std::unique_ptr<MetricSink> Task::metrics(Part part) const {
  return classification_metrics(info().head, info().n_classes, size(part));
}

std::unique_ptr<Task> make_task(const TaskSpec& spec, const std::string& run_dir) {
  if (is_seq_task(spec.name)) return make_seq_task(spec, run_dir);
  return make_tabular_task(spec, run_dir);
}

}  // namespace cerebra
