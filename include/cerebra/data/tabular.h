// Tabular regression data: a CSV file, its target and transform, a deterministic split, and the encoding of
// features fitted on the training rows only (numerics standardised, categories mapped with an unknown bucket 0).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/types.h>

#include "cerebra/data/csv.h"
#include "cerebra/data/task_spec.h"

namespace cerebra {

// A tabular task resolved to its file and columns.
struct TableSpec {
  std::string name;       // "cps1988", "stackoverflow", "csv"
  std::string path;       // CSV file
  std::string target;     // target column
  std::string transform;  // "none" or "log"
  std::vector<std::string> categorical, numeric, drop;  // forced kinds; other columns are inferred
};

// Task defaults overlaid with the spec's data keys. Throws with a hint when the data file is missing.
TableSpec resolve_table(const TaskSpec& task);

struct Split {
  std::vector<int64_t> train, val, test;  // indices into the usable rows, each sorted ascending
};
// A seeded permutation cut into test, validation and training parts; the same inputs give the same split.
Split make_split(int64_t n, double val_fraction, double test_fraction, uint64_t seed);
nlohmann::json split_to_json(const Split& split);

// The table, with the columns resolved and the rows that have a usable target.
struct TabularSource {
  TableSpec spec;
  CsvTable table;
  std::vector<int64_t> rows;      // table rows with a usable target, in file order
  std::vector<int64_t> num_cols;  // table column indices
  std::vector<int64_t> cat_cols;
  int64_t target_col = -1;
  uint64_t checksum = 0;          // FNV-1a 64 of the file bytes
  int64_t dropped_rows = 0;       // rows without a usable target
};
TabularSource open_tabular(const TableSpec& spec, int64_t max_rows = 0);

struct TabularData {
  std::vector<std::string> numeric_names, categorical_names;
  std::vector<int64_t> cardinalities;  // per categorical feature, including bucket 0 (unknown or missing)
  torch::Tensor num;    // (N, Fn) float32, standardised with training statistics, missing -> 0
  torch::Tensor cat;    // (N, Fc) int64 in [0, cardinality)
  torch::Tensor y;      // (N,) float32, transformed target standardised with training statistics
  torch::Tensor y_raw;  // (N,) float64, the target as in the file (e.g. dollars)
  double y_mean = 0, y_std = 1;
  std::string transform;
  int64_t rows() const { return y.size(0); }
  int64_t one_hot_width() const;  // numerics + sum of cardinalities
  // Inverse of the target standardisation and transform: model output -> file units.
  torch::Tensor to_transformed(const torch::Tensor& y_std_units) const;  // -> transformed scale (e.g. log dollars)
  torch::Tensor to_raw(const torch::Tensor& y_std_units) const;          // -> file units (e.g. dollars)
};
// Encodes every usable row; statistics and category maps come from `train` (indices into source.rows).
TabularData encode_tabular(const TabularSource& source, const std::vector<int64_t>& train);

// Dense design matrix for linear models and trees: (N, one_hot_width) float64 numerics then one-hot categories.
torch::Tensor one_hot_design(const torch::Tensor& num, const torch::Tensor& cat,
                             const std::vector<int64_t>& cardinalities);
torch::Tensor one_hot_design(const TabularData& data);

class Task;
// The data set of `spec` as a regression Task (include/cerebra/data/task.h); `run_dir` non-empty: restores the
// split.json written there by an earlier run and warns when the file's checksum changed since.
std::unique_ptr<Task> make_tabular_task(const TaskSpec& spec, const std::string& run_dir);

uint64_t fnv1a64_file(const std::string& path);

}  // namespace cerebra
