#include "cerebra/data/tabular.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "cerebra/core/config.h"

namespace cerebra {

namespace {

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

TableSpec resolve_table(const TaskSpec& task) {
  TableSpec spec;
  spec.name = task.name;
  const std::string& dir = task.data_dir;
  if (spec.name == "cps1988") {
    spec.path = dir + "/cps1988.csv";
    spec.target = "wage";
    spec.transform = "log";
  } else if (spec.name == "stackoverflow") {
    spec.path = dir + "/stackoverflow.csv";
    spec.target = "Salary";
    spec.transform = "log";
  } else {
    spec.transform = "none";
  }
  if (!task.data.empty()) spec.path = task.data;
  if (!task.target.empty()) spec.target = task.target;
  if (!task.target_transform.empty()) spec.transform = task.target_transform;
  spec.categorical = task.categorical;
  spec.numeric = task.numeric;
  spec.drop = task.drop;
  if (spec.path.empty()) throw ConfigError("task 'csv' needs `data: FILE.csv` and `target: COLUMN`");
  if (spec.target.empty()) throw ConfigError("task '" + spec.name + "' needs `target: COLUMN`");
  if (!std::filesystem::exists(spec.path)) {
    std::string hint = spec.name == "csv" ? "" : " (run `cerebra data` to export the data sets into " + dir + "/)";
    throw ConfigError("data file '" + spec.path + "' not found" + hint);
  }
  return spec;
}

Split make_split(int64_t n, double val_fraction, double test_fraction, uint64_t seed) {
  if (val_fraction < 0 || test_fraction < 0 || val_fraction + test_fraction >= 1.0)
    throw ConfigError("val_fraction and test_fraction must be >= 0 and sum to less than 1, got " +
                      std::to_string(val_fraction) + " and " + std::to_string(test_fraction));
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  // Fisher-Yates with a fixed generator: std::shuffle's algorithm is implementation-defined.
  std::mt19937_64 rng(seed ^ 0x5851f42d4c957f2dULL);
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(perm[i], perm[j]);
  }
  int64_t n_test = static_cast<int64_t>(std::llround(test_fraction * n));
  int64_t n_val = static_cast<int64_t>(std::llround(val_fraction * n));
  if (n - n_test - n_val < 1) throw ConfigError("too few rows (" + std::to_string(n) + ") for the split");
  Split s;
  s.test.assign(perm.begin(), perm.begin() + n_test);
  s.val.assign(perm.begin() + n_test, perm.begin() + n_test + n_val);
  s.train.assign(perm.begin() + n_test + n_val, perm.end());
  std::sort(s.test.begin(), s.test.end());
  std::sort(s.val.begin(), s.val.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

nlohmann::json split_to_json(const Split& split) {
  return {{"train", split.train}, {"val", split.val}, {"test", split.test}};
}

uint64_t fnv1a64_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint64_t h = 1469598103934665603ULL;
  char buf[1 << 16];
  while (f) {
    f.read(buf, sizeof(buf));
    for (std::streamsize i = 0; i < f.gcount(); ++i) {
      h ^= static_cast<unsigned char>(buf[i]);
      h *= 1099511628211ULL;
    }
  }
  return h;
}

TabularSource open_tabular(const TableSpec& spec, int64_t max_rows) {
  TabularSource src;
  src.spec = spec;
  src.table = read_csv(spec.path);
  src.checksum = fnv1a64_file(spec.path);
  const CsvTable& t = src.table;
  src.target_col = t.column_index(spec.target);
  for (const auto& name : spec.categorical) (void)t.column_index(name);  // each must exist
  for (const auto& name : spec.numeric) (void)t.column_index(name);
  for (const auto& name : spec.drop) (void)t.column_index(name);

  for (int64_t c = 0; c < static_cast<int64_t>(t.header.size()); ++c) {
    const std::string& name = t.header[c];
    if (c == src.target_col || contains(spec.drop, name)) continue;
    bool forced_cat = contains(spec.categorical, name), forced_num = contains(spec.numeric, name);
    if (forced_cat && forced_num)
      throw CsvError(spec.path, 0, "column '" + name + "' is listed as both categorical and numeric");
    if (forced_num) {
      for (size_t r = 0; r < t.rows.size(); ++r) {
        double v;
        const CsvCell& cell = t.rows[r][c];
        if (!cell.missing && !parse_double(cell.text, &v))
          throw CsvError(spec.path, t.line_numbers[r],
                         "column '" + name + "' is configured numeric but holds '" + cell.text + "'");
      }
    }
    if (forced_cat || (!forced_num && infer_column_kind(t, c) == ColumnKind::Categorical))
      src.cat_cols.push_back(c);
    else
      src.num_cols.push_back(c);
  }

  for (size_t r = 0; r < t.rows.size(); ++r) {
    if (max_rows > 0 && static_cast<int64_t>(src.rows.size()) >= max_rows) break;
    const CsvCell& cell = t.rows[r][src.target_col];
    double v;
    if (cell.missing) {
      ++src.dropped_rows;
      continue;
    }
    if (!parse_double(cell.text, &v))
      throw CsvError(spec.path, t.line_numbers[r],
                     "target '" + spec.target + "' must be numeric, found '" + cell.text + "'");
    if (spec.transform == "log" && !(v > 0))
      throw CsvError(spec.path, t.line_numbers[r],
                     "target '" + spec.target + "' is " + cell.text + ": the log transform needs values > 0");
    src.rows.push_back(static_cast<int64_t>(r));
  }
  if (src.rows.size() < 10)
    throw CsvError(spec.path, 0, "only " + std::to_string(src.rows.size()) + " rows with a usable target");
  return src;
}

int64_t TabularData::one_hot_width() const {
  int64_t w = static_cast<int64_t>(numeric_names.size());
  for (auto c : cardinalities) w += c;
  return w;
}

torch::Tensor TabularData::to_transformed(const torch::Tensor& y_std_units) const {
  return y_std_units.to(torch::kFloat64) * y_std + y_mean;
}

torch::Tensor TabularData::to_raw(const torch::Tensor& y_std_units) const {
  auto t = to_transformed(y_std_units);
  return transform == "log" ? t.exp() : t;
}

TabularData encode_tabular(const TabularSource& src, const std::vector<int64_t>& train) {
  const CsvTable& t = src.table;
  const int64_t n = static_cast<int64_t>(src.rows.size());
  const int64_t fn = static_cast<int64_t>(src.num_cols.size());
  const int64_t fc = static_cast<int64_t>(src.cat_cols.size());
  TabularData d;
  d.transform = src.spec.transform;
  for (auto c : src.num_cols) d.numeric_names.push_back(t.header[c]);
  for (auto c : src.cat_cols) d.categorical_names.push_back(t.header[c]);

  auto cell = [&](int64_t i, int64_t c) -> const CsvCell& { return t.rows[src.rows[i]][c]; };

  // Target: transform, then standardise with training statistics.
  std::vector<double> yt(n), yraw(n);
  for (int64_t i = 0; i < n; ++i) {
    double v;
    parse_double(cell(i, src.target_col).text, &v);
    yraw[i] = v;
    yt[i] = d.transform == "log" ? std::log(v) : v;
  }
  double sum = 0, sq = 0;
  for (auto i : train) sum += yt[i];
  d.y_mean = sum / static_cast<double>(train.size());
  for (auto i : train) sq += (yt[i] - d.y_mean) * (yt[i] - d.y_mean);
  d.y_std = std::sqrt(sq / std::max<double>(1.0, static_cast<double>(train.size()) - 1.0));
  if (!(d.y_std > 0)) d.y_std = 1.0;
  d.y = torch::empty({n}, torch::kFloat32);
  d.y_raw = torch::from_blob(yraw.data(), {n}, torch::kFloat64).clone();
  for (int64_t i = 0; i < n; ++i) d.y[i] = static_cast<float>((yt[i] - d.y_mean) / d.y_std);

  // Numerics: mean and standard deviation of the non-missing training values.
  d.num = torch::zeros({n, fn}, torch::kFloat32);
  auto num_a = d.num.accessor<float, 2>();
  for (int64_t j = 0; j < fn; ++j) {
    const int64_t c = src.num_cols[j];
    double s = 0, s2 = 0;
    int64_t cnt = 0;
    std::vector<double> vals(n, std::nan(""));
    for (int64_t i = 0; i < n; ++i) {
      double v;
      if (!cell(i, c).missing && parse_double(cell(i, c).text, &v)) vals[i] = v;
    }
    for (auto i : train)
      if (!std::isnan(vals[i])) {
        s += vals[i];
        ++cnt;
      }
    double mean = cnt > 0 ? s / cnt : 0.0;
    for (auto i : train)
      if (!std::isnan(vals[i])) s2 += (vals[i] - mean) * (vals[i] - mean);
    double sd = cnt > 1 ? std::sqrt(s2 / (cnt - 1)) : 1.0;
    if (!(sd > 0)) sd = 1.0;
    for (int64_t i = 0; i < n; ++i) num_a[i][j] = std::isnan(vals[i]) ? 0.0f : static_cast<float>((vals[i] - mean) / sd);
  }

  // Categories: the values seen in training, sorted, get 1..K; anything else (and missing) is bucket 0.
  d.cat = torch::zeros({n, fc}, torch::kInt64);
  auto cat_a = d.cat.accessor<int64_t, 2>();
  for (int64_t j = 0; j < fc; ++j) {
    const int64_t c = src.cat_cols[j];
    std::set<std::string> seen;
    for (auto i : train)
      if (!cell(i, c).missing) seen.insert(cell(i, c).text);
    std::map<std::string, int64_t> index;
    int64_t k = 1;
    for (const auto& s : seen) index[s] = k++;
    d.cardinalities.push_back(k);
    for (int64_t i = 0; i < n; ++i) {
      const CsvCell& x = cell(i, c);
      auto it = x.missing ? index.end() : index.find(x.text);
      cat_a[i][j] = it == index.end() ? 0 : it->second;
    }
  }
  return d;
}

torch::Tensor one_hot_design(const torch::Tensor& num, const torch::Tensor& cat,
                             const std::vector<int64_t>& cardinalities) {
  std::vector<torch::Tensor> parts{num.to(torch::kFloat64)};
  for (size_t j = 0; j < cardinalities.size(); ++j)
    parts.push_back(torch::one_hot(cat.select(1, static_cast<int64_t>(j)), cardinalities[j]).to(torch::kFloat64));
  return torch::cat(parts, 1);
}

torch::Tensor one_hot_design(const TabularData& data) { return one_hot_design(data.num, data.cat, data.cardinalities); }

}  // namespace cerebra
