// Non-neural baselines: ordinary least squares and gradient-boosted trees (XGBoost's C API).
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

namespace cerebra {

// Least squares with an intercept: beta (W + 1,) float64, beta[0] the intercept. X: (N, W), y: (N,).
// A tiny ridge term (relative to the trace of X^T X) keeps rank-deficient designs (e.g. an unused category) solvable.
torch::Tensor fit_ols(const torch::Tensor& X, const torch::Tensor& y, double ridge = 1e-9);
// X: (N, W) -> (N,)
torch::Tensor ols_predict(const torch::Tensor& X, const torch::Tensor& beta);

struct XgbParams {
  int64_t rounds = 600, max_depth = 6, early_stopping_rounds = 50, threads = 1;
  double eta = 0.05, subsample = 0.8;
  uint64_t seed = 42;
};

class XgbRegressor {
 public:
  XgbRegressor() = default;
  ~XgbRegressor();
  XgbRegressor(const XgbRegressor&) = delete;
  XgbRegressor& operator=(const XgbRegressor&) = delete;

  // Squared-error boosting; stops when validation RMSE has not improved for early_stopping_rounds and keeps the
  // trees up to the best round. X: (N, W) float, y: (N,).
  void fit(const torch::Tensor& X_train, const torch::Tensor& y_train, const torch::Tensor& X_val,
           const torch::Tensor& y_val, const XgbParams& params);
  torch::Tensor predict(const torch::Tensor& X) const;  // (N,) float32
  void save(const std::string& path) const;
  void load(const std::string& path, int64_t threads);
  int64_t best_rounds() const { return best_rounds_; }
  int64_t rounds_run() const { return rounds_run_; }

 private:
  void* booster_ = nullptr;  // BoosterHandle
  int64_t best_rounds_ = 0, rounds_run_ = 0;
};

}  // namespace cerebra
