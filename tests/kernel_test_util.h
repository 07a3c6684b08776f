// Helpers shared by the kernel-vs-reference tests: difference statistics printed before each assert, the
// flash-attention accuracy criterion for float32, and a central-difference gradient (LibTorch's C++ API has no
// gradcheck).
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace cerebra::testing {

struct Diff {
  double max = 0, mean = 0;
};

// a, b: same shape, any floating dtype -> max and mean of |a - b| (in double)
inline Diff diff(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = (a.detach().to(torch::kDouble) - b.detach().to(torch::kDouble)).abs();
  return {d.max().item<double>(), d.mean().item<double>()};
}

inline double max_abs(const torch::Tensor& a) { return a.detach().abs().max().item<double>(); }

inline void print_diff(const std::string& what, const Diff& d) {
  std::printf("  %-28s max diff %.3e  mean diff %.3e\n", what.c_str(), d.max, d.mean);
}

// float64 kernel against float64 reference: max |kernel - ref| <= rtol · max |ref| (a scale-relative bound on
// the largest element difference: it fails as soon as one element is off by more than rtol of the tensor's scale).
inline void expect_close_f64(const std::string& what, const torch::Tensor& kernel, const torch::Tensor& ref,
                             double rtol = 1e-10) {
  const Diff d = diff(kernel, ref);
  print_diff(what, d);
  const double bound = rtol * std::max(1.0, max_abs(ref));
  EXPECT_LE(d.max, bound) << what << ": kernel differs from the reference by " << d.max << " > " << bound;
}

// float32 kernel judged as flash-attention's tests do: against the float64 reference ("truth"), its error may be at
// most `factor` times the error of the float32 reference (2 for outputs, 3 for gradients), plus a floor of a few
// float32 ulps of the tensor's scale for cases where the float32 reference happens to be exact.
inline void expect_close_f32(const std::string& what, const torch::Tensor& kernel, const torch::Tensor& ref32,
                             const torch::Tensor& truth, double factor) {
  const Diff dk = diff(kernel, truth), dr = diff(ref32, truth), dkr = diff(kernel, ref32);
  print_diff(what + " kernel-truth", dk);
  print_diff(what + " ref32-truth", dr);
  print_diff(what + " kernel-ref32", dkr);
  const double bound = factor * dr.max + 4e-7 * std::max(1.0, max_abs(truth));
  EXPECT_LE(dk.max, bound) << what << ": float32 kernel error " << dk.max << " exceeds " << factor
                           << " x the float32 reference's error " << dr.max;
}

// Central differences of the scalar f() with respect to every element of x (float64, contiguous, modified in
// place and restored).
inline torch::Tensor numeric_grad(const std::function<torch::Tensor()>& f, torch::Tensor& x, double eps = 1e-6) {
  torch::NoGradGuard guard;
  TORCH_CHECK(x.scalar_type() == torch::kDouble && x.is_contiguous(), "numeric_grad: contiguous float64 expected");
  auto g = torch::zeros_like(x);
  double* p = x.data_ptr<double>();
  double* gp = g.data_ptr<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double orig = p[i];
    p[i] = orig + eps;
    const double fp = f().item<double>();
    p[i] = orig - eps;
    const double fm = f().item<double>();
    p[i] = orig;
    gp[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

// Checks autograd gradients of the scalar f() against central differences for each input (float64 leaves).
inline void expect_gradcheck(const std::string& what, const std::function<torch::Tensor()>& f,
                             std::vector<torch::Tensor> inputs, const std::vector<std::string>& names,
                             double tol = 1e-6) {
  auto analytic = torch::autograd::grad({f()}, inputs, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                        /*allow_unused=*/true);
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto numeric = numeric_grad(f, inputs[i]);
    auto a = analytic[i].defined() ? analytic[i] : torch::zeros_like(numeric);
    const Diff d = diff(a, numeric);
    print_diff(what + " d" + names[i] + " autograd-numeric", d);
    EXPECT_LE(d.max, tol * std::max(1.0, max_abs(numeric))) << what << ": gradient of " << names[i];
  }
}

// Switches LibTorch's intra-op thread count for one scope.
class ThreadScope {
 public:
  explicit ThreadScope(int n) : saved_(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadScope() { at::set_num_threads(saved_); }

 private:
  int saved_;
};

}  // namespace cerebra::testing
