// A tabular regression data set as a Task: its split (new, or restored from a run directory), the encoded
// features as batches, and the regression metrics in the target's transformed and raw units.
#include <torch/torch.h>

#include <filesystem>
#include <iostream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cerebra/core/io.h"
#include "cerebra/data/tabular.h"
#include "cerebra/data/task.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {

std::vector<int64_t> split_rows_of(const nlohmann::json& j, const char* key, const fs::path& path, int64_t n_rows,
                                   const std::string& data_path) {
  if (!j.contains(key) || !j[key].is_array()) throw std::runtime_error(path.string() + ": missing array '" + key + "'");
  auto rows = j[key].get<std::vector<int64_t>>();
  for (auto r : rows)
    if (r < 0 || r >= n_rows)
      throw std::runtime_error(fmt::format("{}: row {} is outside the {} rows of {}", path.string(), r, n_rows,
                                           data_path));
  return rows;
}

class RegressionMetrics final : public MetricSink {
 public:
  RegressionMetrics(const TabularData& d, std::vector<int64_t> rows) : d_(d), rows_(std::move(rows)) {}
  void add(const torch::Tensor& pred, const Batch&) override { preds_.push_back(pred.reshape({-1}).detach()); }
  nlohmann::json result(const std::string& prefix) const override {
    auto pred = preds_.empty() ? torch::zeros({0}) : torch::cat(preds_);
    if (pred.size(0) != static_cast<int64_t>(rows_.size()))
      throw std::logic_error(fmt::format("regression metrics: {} predictions for {} rows", pred.size(0), rows_.size()));
    auto idx = torch::tensor(rows_, torch::kInt64);
    auto pt = d_.to_transformed(pred), yt = d_.to_transformed(d_.y.index_select(0, idx));
    auto pr = d_.to_raw(pred), yr = d_.y_raw.index_select(0, idx);
    const double rmse = (pt - yt).pow(2).mean().sqrt().item<double>();
    const double var = (yt - yt.mean()).pow(2).mean().item<double>();
    return {{prefix + "_rmse", rmse},
            {prefix + "_r2", 1.0 - rmse * rmse / var},
            {prefix + "_rmse_raw", (pr - yr).pow(2).mean().sqrt().item<double>()},
            {prefix + "_mae_raw", (pr - yr).abs().mean().item<double>()}};
  }

 private:
  const TabularData& d_;
  std::vector<int64_t> rows_;
  std::vector<torch::Tensor> preds_;
};

class TabularTask final : public Task {
 public:
  TabularTask(const TaskSpec& spec, const std::string& run_dir) {
    source_ = open_tabular(resolve_table(spec), spec.max_rows);
    const auto n_rows = static_cast<int64_t>(source_.rows.size());
    if (run_dir.empty()) {
      split_ = make_split(n_rows, spec.val_fraction, spec.test_fraction, spec.seed);
    } else {  // the run's own split, and a warning when the data changed since
      const fs::path dir(run_dir), path = dir / "split.json";
      const nlohmann::json j = read_json_file(path);
      const std::string& data = source_.spec.path;
      split_ = {split_rows_of(j, "train", path, n_rows, data), split_rows_of(j, "val", path, n_rows, data),
                split_rows_of(j, "test", path, n_rows, data)};
      if (split_.test.empty()) throw std::runtime_error(path.string() + ": empty test split");
      if (fs::exists(dir / "summary.json")) {
        const nlohmann::json summary = read_json_file(dir / "summary.json");
        const std::string want =
            summary.contains("data") ? summary["data"].value("fnv1a64", std::string()) : std::string();
        const std::string have = fmt::format("{:016x}", source_.checksum);
        if (!want.empty() && want != have)
          std::cerr << fmt::format("warning: {} has changed since the run (checksum {} != {}): metrics will differ\n",
                                   source_.spec.path, have, want);
      }
    }
    data_ = encode_tabular(source_, split_.train);
    info_.name = source_.spec.name;
    info_.head = HeadKind::Regression;
    info_.n_classes = 1;
    info_.metric = "test_rmse";
    info_.higher_is_better = false;
    info_.schema.n_numeric = static_cast<int64_t>(data_.numeric_names.size());
    info_.schema.cardinalities = data_.cardinalities;
    info_.schema.n_outputs = 1;
  }

  const TaskInfo& info() const override { return info_; }
  int64_t size(Part part) const override { return static_cast<int64_t>(rows(part).size()); }
  Batch batch(Part part, const std::vector<int64_t>& idx) const override {
    const auto& all = rows(part);
    std::vector<int64_t> r(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) r[i] = all.at(static_cast<size_t>(idx[i]));
    auto t = torch::tensor(r, torch::kInt64);
    Batch b;
    b.num = data_.num.index_select(0, t);
    b.cat = data_.cat.index_select(0, t);
    b.y = data_.y.index_select(0, t);
    return b;
  }
  nlohmann::json describe() const override {
    return {{"path", source_.spec.path}, {"fnv1a64", fmt::format("{:016x}", source_.checksum)},
            {"rows", source_.rows.size()}, {"train", split_.train.size()}, {"val", split_.val.size()},
            {"test", split_.test.size()}};
  }
  std::string log_line() const override {
    std::string line = fmt::format("{} rows ({} train, {} val, {} test), {} numeric + {} categorical features",
                                   source_.rows.size(), split_.train.size(), split_.val.size(), split_.test.size(),
                                   data_.numeric_names.size(), data_.categorical_names.size());
    if (source_.dropped_rows > 0)
      line += fmt::format("; warning: {} rows without a target were skipped", source_.dropped_rows);
    return line;
  }
  nlohmann::json summary_fields() const override {
    return {{"target", {{"column", source_.spec.target}, {"transform", data_.transform}, {"mean", data_.y_mean},
                        {"std", data_.y_std}}}};
  }
  void save(const std::string& run_dir) const override {
    write_text_file(fs::path(run_dir) / "split.json", split_to_json(split_).dump() + "\n");
  }
  nlohmann::json describe_val(double val_loss) const override {
    return {{"val_rmse", std::sqrt(val_loss) * data_.y_std}};
  }
  std::unique_ptr<MetricSink> metrics(Part part) const override {
    return std::make_unique<RegressionMetrics>(data_, rows(part));
  }

 private:
  const std::vector<int64_t>& rows(Part part) const {
    return part == Part::Train ? split_.train : part == Part::Val ? split_.val : split_.test;
  }

  TabularSource source_;
  Split split_;
  TabularData data_;
  TaskInfo info_;
};

}  // namespace

std::unique_ptr<Task> make_tabular_task(const TaskSpec& spec, const std::string& run_dir) {
  return std::make_unique<TabularTask>(spec, run_dir);
}

}  // namespace cerebra
