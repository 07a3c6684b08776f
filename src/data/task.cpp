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

torch::Tensor Task::loss(const torch::Tensor& pred, const Batch& b) const {
  switch (info().head) {
    case HeadKind::Regression: return torch::mse_loss(pred.reshape({-1}), b.y);
    case HeadKind::SequenceClassification: return torch::cross_entropy_loss(pred, b.y);
    default:
      return torch::cross_entropy_loss(pred.reshape({-1, pred.size(-1)}), b.y.reshape({-1}), {}, at::Reduction::Mean,
                                       kIgnore);
  }
}

torch::Tensor Task::per_example_loss(const torch::Tensor& pred, const Batch& b) const {
  switch (info().head) {
    case HeadKind::Regression: return (pred.reshape({-1}) - b.y).pow(2);
    case HeadKind::SequenceClassification: return torch::cross_entropy_loss(pred, b.y, {}, at::Reduction::None);
    default: {  // the mean over the example's answer positions
      auto valid = b.y.ne(kIgnore).to(pred.scalar_type());
      auto per_token = torch::cross_entropy_loss(pred.reshape({-1, pred.size(-1)}), b.y.reshape({-1}), {},
                                                 at::Reduction::None, kIgnore).reshape(b.y.sizes());
      return (per_token * valid).sum(1) / valid.sum(1).clamp_min(1.0);
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
    auto flat = pred.reshape({-1, pred.size(-1)});
    loss_sum_ += torch::cross_entropy_loss(flat, b.y.reshape({-1}), {}, at::Reduction::Sum, kIgnore).item<double>();
    auto valid = b.y.ne(kIgnore);
    auto right = pred.argmax(-1).eq(b.y).logical_and(valid);
    correct_ += right.sum().item<double>();
    counted_ += valid.sum().item<double>();
    exact_ += right.sum(1).eq(valid.sum(1)).sum().item<double>();
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
