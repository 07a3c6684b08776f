#include "cerebra/models/baselines.h"

#include <torch/torch.h>
#include <xgboost/c_api.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

namespace cerebra {

torch::Tensor fit_ols(const torch::Tensor& X, const torch::Tensor& y, double ridge) {
  TORCH_CHECK(X.dim() == 2 && y.dim() == 1 && X.size(0) == y.size(0), "fit_ols: X must be (N, W) and y (N,), got ",
              X.sizes(), " and ", y.sizes());
  auto Xd = torch::cat({torch::ones({X.size(0), 1}, torch::kFloat64), X.to(torch::kFloat64)}, 1);
  auto yd = y.to(torch::kFloat64);
  auto gram = torch::mm(Xd.t(), Xd);
  auto eye = torch::eye(gram.size(0), torch::kFloat64);
  eye[0][0] = 0.0;  // the intercept is not penalised
  double scale = gram.diagonal().mean().item<double>();
  return torch::linalg::solve(gram + eye * (ridge * scale), torch::mv(Xd.t(), yd), /*left=*/true);
}

torch::Tensor ols_predict(const torch::Tensor& X, const torch::Tensor& beta) {
  return torch::mv(X.to(torch::kFloat64), beta.slice(0, 1)) + beta[0];
}

namespace {

void xgb_check(int rc, const char* what) {
  if (rc != 0) throw std::runtime_error(std::string("xgboost: ") + what + " failed: " + XGBGetLastError());
}

struct DMatrix {
  DMatrixHandle h = nullptr;
  DMatrix(const torch::Tensor& X, const torch::Tensor* y) {
    auto Xf = X.to(torch::kFloat32).contiguous();
    xgb_check(XGDMatrixCreateFromMat(Xf.data_ptr<float>(), static_cast<bst_ulong>(Xf.size(0)),
                                     static_cast<bst_ulong>(Xf.size(1)), std::numeric_limits<float>::quiet_NaN(), &h),
              "XGDMatrixCreateFromMat");
    if (y != nullptr) {
      auto yf = y->to(torch::kFloat32).contiguous();
      xgb_check(XGDMatrixSetFloatInfo(h, "label", yf.data_ptr<float>(), static_cast<bst_ulong>(yf.numel())),
                "XGDMatrixSetFloatInfo(label)");
    }
  }
  ~DMatrix() {
    if (h) XGDMatrixFree(h);
  }
};

// Parses "[12]\tval-rmse:0.1234" -> 0.1234
double parse_eval(const char* s) {
  std::string str(s);
  auto pos = str.rfind(':');
  if (pos == std::string::npos) throw std::runtime_error("xgboost: unexpected evaluation string '" + str + "'");
  return std::stod(str.substr(pos + 1));
}

}  // namespace

XgbRegressor::~XgbRegressor() {
  if (booster_) XGBoosterFree(static_cast<BoosterHandle>(booster_));
}

void XgbRegressor::fit(const torch::Tensor& X_train, const torch::Tensor& y_train, const torch::Tensor& X_val,
                       const torch::Tensor& y_val, const XgbParams& p) {
  DMatrix dtrain(X_train, &y_train), dval(X_val, &y_val);
  BoosterHandle b = nullptr;
  DMatrixHandle cache[] = {dtrain.h, dval.h};
  xgb_check(XGBoosterCreate(cache, 2, &b), "XGBoosterCreate");
  auto set = [&](const char* k, const std::string& v) { xgb_check(XGBoosterSetParam(b, k, v.c_str()), k); };
  set("objective", "reg:squarederror");
  set("eval_metric", "rmse");
  set("max_depth", std::to_string(p.max_depth));
  set("eta", std::to_string(p.eta));
  set("subsample", std::to_string(p.subsample));
  set("nthread", std::to_string(p.threads));
  set("seed", std::to_string(p.seed));
  set("tree_method", "hist");
  set("verbosity", "0");

  DMatrixHandle evals[] = {dval.h};
  const char* names[] = {"val"};
  double best = std::numeric_limits<double>::infinity();
  int64_t best_round = 0;
  for (int64_t it = 0; it < p.rounds; ++it) {
    xgb_check(XGBoosterUpdateOneIter(b, static_cast<int>(it), dtrain.h), "XGBoosterUpdateOneIter");
    const char* out = nullptr;
    xgb_check(XGBoosterEvalOneIter(b, static_cast<int>(it), evals, names, 1, &out), "XGBoosterEvalOneIter");
    double rmse = parse_eval(out);
    rounds_run_ = it + 1;
    if (rmse < best) {
      best = rmse;
      best_round = it + 1;
    } else if (it + 1 - best_round >= p.early_stopping_rounds) {
      break;
    }
  }
  // Keep the trees of the best round only.
  BoosterHandle sliced = nullptr;
  xgb_check(XGBoosterSlice(b, 0, static_cast<int>(best_round), 1, &sliced), "XGBoosterSlice");
  XGBoosterFree(b);
  if (booster_) XGBoosterFree(static_cast<BoosterHandle>(booster_));
  booster_ = sliced;
  best_rounds_ = best_round;
}

torch::Tensor XgbRegressor::predict(const torch::Tensor& X) const {
  TORCH_CHECK(booster_ != nullptr, "XgbRegressor::predict: the model is not trained or loaded");
  DMatrix d(X, nullptr);
  bst_ulong len = 0;
  const float* out = nullptr;
  xgb_check(XGBoosterPredict(static_cast<BoosterHandle>(booster_), d.h, 0, 0, 0, &len, &out), "XGBoosterPredict");
  TORCH_CHECK(static_cast<int64_t>(len) == X.size(0), "xgboost returned ", len, " predictions for ", X.size(0),
              " rows");
  return torch::from_blob(const_cast<float*>(out), {static_cast<int64_t>(len)}, torch::kFloat32).clone();
}

void XgbRegressor::save(const std::string& path) const {
  xgb_check(XGBoosterSaveModel(static_cast<BoosterHandle>(booster_), path.c_str()), "XGBoosterSaveModel");
}

void XgbRegressor::load(const std::string& path, int64_t threads) {
  BoosterHandle b = nullptr;
  xgb_check(XGBoosterCreate(nullptr, 0, &b), "XGBoosterCreate");
  if (XGBoosterLoadModel(b, path.c_str()) != 0) {
    std::string err = XGBGetLastError();
    XGBoosterFree(b);
    throw std::runtime_error("cannot load xgboost model " + path + ": " + err);
  }
  xgb_check(XGBoosterSetParam(b, "nthread", std::to_string(threads).c_str()), "nthread");
  if (booster_) XGBoosterFree(static_cast<BoosterHandle>(booster_));
  booster_ = b;
}

}  // namespace cerebra
