// Metric directions, the Pareto frontier, statistics over seeds and log–log slopes. No LibTorch.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include <fmt/core.h>

#include "cerebra/exp/experiments.h"

namespace cerebra::exp {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

// ---- metrics ---------------------------------------------------------------------------------------------------

bool metric_higher_is_better(const std::string& name) {
  const std::string n = lower(name);
  for (const char* word : {"accuracy", "acc", "f1", "r2", "auc", "precision", "recall", "exact_match", "em"}) {
    // match whole underscore-separated words ("test_acc", "macro_f1", "test_r2"), not substrings of others
    const std::string w(word);
    size_t pos = 0;
    while ((pos = n.find(w, pos)) != std::string::npos) {
      const bool start = pos == 0 || n[pos - 1] == '_' || n[pos - 1] == '.';
      const size_t end = pos + w.size();
      const bool stop = end == n.size() || n[end] == '_' || n[end] == '.';
      if (start && stop) return true;
      pos = end;
    }
  }
  return false;
}

MetricSpec parse_metric(const std::string& text) {
  MetricSpec m;
  const auto colon = text.rfind(':');
  if (colon != std::string::npos) {
    const std::string dir = lower(text.substr(colon + 1));
    m.name = text.substr(0, colon);
    if (dir == "max" || dir == "higher")
      m.higher_is_better = true;
    else if (dir == "min" || dir == "lower")
      m.higher_is_better = false;
    else
      throw std::invalid_argument("metric '" + text + "': the direction after ':' must be max or min");
  } else {
    m.name = text;
    m.higher_is_better = metric_higher_is_better(text);
  }
  if (m.name.empty()) throw std::invalid_argument("metric '" + text + "': empty name");
  return m;
}

std::string default_metric(const nlohmann::json& summary) {
  if (!summary.is_object() || !summary.contains("metrics") || !summary["metrics"].is_object()) return "";
  const auto& m = summary["metrics"];
  if (summary.contains("primary_metric") && summary["primary_metric"].is_string()) {  // the task's own metric
    const std::string p = summary["primary_metric"].get<std::string>();
    if (m.contains(p) && m[p].is_number()) return p;
  }
  for (const char* k : {"test_rmse", "test_accuracy", "test_macro_f1"})
    if (m.contains(k) && m[k].is_number()) return k;
  for (auto it = m.begin(); it != m.end(); ++it)
    if (it.key().rfind("test_", 0) == 0 && it.value().is_number()) return it.key();
  for (auto it = m.begin(); it != m.end(); ++it)
    if (it.value().is_number()) return it.key();
  return "";
}

double summary_value(const nlohmann::json& summary, const std::string& name) {
  if (!summary.is_object()) return kNaN;
  if (summary.contains("metrics") && summary["metrics"].is_object() && summary["metrics"].contains(name)) {
    const auto& v = summary["metrics"][name];
    return v.is_number() ? v.get<double>() : kNaN;
  }
  const nlohmann::json* cur = &summary;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const std::string part = name.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur->is_object() || !cur->contains(part)) return kNaN;
    cur = &(*cur)[part];
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur->is_number() ? cur->get<double>() : kNaN;
}

// ---- Pareto frontier -------------------------------------------------------------------------------------------

bool dominates(const CostPoint& a, const CostPoint& b, bool higher_is_better) {
  const double ga = higher_is_better ? a.value : -a.value, gb = higher_is_better ? b.value : -b.value;
  return a.cost <= b.cost && ga >= gb && (a.cost < b.cost || ga > gb);
}

std::vector<size_t> pareto_front(const std::vector<CostPoint>& points, bool higher_is_better) {
  // Sort by cost; within a group of equal cost only the best value can be non-dominated, and it is exactly when
  // it beats the best value of every strictly cheaper point.
  std::vector<size_t> idx;
  for (size_t i = 0; i < points.size(); ++i)
    if (std::isfinite(points[i].cost) && std::isfinite(points[i].value)) idx.push_back(i);
  auto good = [&](size_t i) { return higher_is_better ? points[i].value : -points[i].value; };
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return points[a].cost < points[b].cost; });
  std::vector<size_t> front;
  double best_cheaper = -std::numeric_limits<double>::infinity();
  for (size_t g = 0; g < idx.size();) {
    size_t e = g;
    double best = -std::numeric_limits<double>::infinity();
    while (e < idx.size() && points[idx[e]].cost == points[idx[g]].cost) best = std::max(best, good(idx[e++]));
    if (best > best_cheaper)
      for (size_t k = g; k < e; ++k)
        if (good(idx[k]) == best) front.push_back(idx[k]);
    best_cheaper = std::max(best_cheaper, best);
    g = e;
  }
  return front;
}

// ---- statistics ------------------------------------------------------------------------------------------------

Stat summarize(const std::vector<double>& values) {
  Stat s;
  std::vector<double> v;
  for (double x : values)
    if (std::isfinite(x)) v.push_back(x);
  s.n = static_cast<int64_t>(v.size());
  if (v.empty()) {
    s.mean = s.std = kNaN;
    return s;
  }
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  if (v.size() < 2) {
    s.std = kNaN;
    return s;
  }
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(ss / static_cast<double>(v.size() - 1));
  return s;
}

std::string format_stat(const Stat& s, int digits) {
  if (s.n == 0) return "-";
  if (s.n < 2 || !std::isfinite(s.std)) return fmt::format("{:.{}f}", s.mean, digits);
  return fmt::format("{:.{}f} ± {:.{}f}", s.mean, digits, s.std, digits);
}

double loglog_slope(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<double> lx, ly;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i)
    if (std::isfinite(x[i]) && std::isfinite(y[i]) && x[i] > 0 && y[i] > 0) {
      lx.push_back(std::log(x[i]));
      ly.push_back(std::log(y[i]));
    }
  if (lx.size() < 2) return kNaN;
  const double n = static_cast<double>(lx.size());
  const double mx = std::accumulate(lx.begin(), lx.end(), 0.0) / n, my = std::accumulate(ly.begin(), ly.end(), 0.0) / n;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < lx.size(); ++i) {
    sxy += (lx[i] - mx) * (ly[i] - my);
    sxx += (lx[i] - mx) * (lx[i] - mx);
  }
  return sxx > 0 ? sxy / sxx : kNaN;
}

std::string fnv1a64_hex(const std::string& bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace cerebra::exp
