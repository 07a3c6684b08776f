// The compute-aware sampler (SPEC §4, paper §3.4): from epoch E_s the training examples of an epoch are drawn,
// with replacement, with probability
//
//   p_i = (1 − f)·softmax_i(β·ρ̃_i − γ·Ĉ_i) + f/N,
//
// ρ_i  the example's informativeness: an exponential moving average of its training loss, ρ ← a·ρ + (1−a)·loss
//      (the first observation sets ρ), updated whenever the example is in a training batch;
// ρ̃_i  ρ_i divided by the mean ρ over the examples seen so far, so that β does not depend on the loss scale
//      (unseen examples get ρ̃ = 1);
// Ĉ_i  the example's realised compute relative to the dense model in its last training pass (observe_cost; 1
//      before its first pass): it varies with the example's length and with what the router ran for it; when every
//      example costs the same, γ has no effect;
// f    the uniform floor: every example keeps p_i ≥ f/N, so none starves.
// Before E_s (or when off) an epoch is a seeded shuffle of all examples, as without the sampler.
// Epochs draw N = the number of training examples. The sampled objective is not re-weighted (as in the paper):
// the sampler deliberately shifts the training distribution toward informative, cheap examples.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/serialize/archive.h>

namespace cerebra {


struct SamplerOptions {
  bool enabled = false;     // "compute_aware"; false = "uniform"
  double beta = 0.1;        // β
  double gamma = 1.0;       // γ
  double floor = 0.1;       // f in [0, 1]
  int64_t start_epoch = 1;  // E_s (1-based)
  double ema = 0.9;         // a in [0, 1)

  void validate() const;  // throws ConfigError naming the key
  bool active(int64_t epoch) const { return enabled && epoch >= start_epoch; }
};

class Sampler {
 public:
  Sampler(int64_t n_examples, const SamplerOptions& options);

  int64_t size() const { return static_cast<int64_t>(rho_.size()); }
  // Ĉ of examples at positions [0, N) from the pass that just ran (finite); kept until the example's next pass.
  void observe_cost(const std::vector<int64_t>& positions, const std::vector<double>& cost);
  // Training losses of examples at positions [0, N) seen in a batch.
  void observe(const std::vector<int64_t>& positions, const std::vector<double>& losses);
  // p (size N, sums to 1) from the current ρ and Ĉ.
  std::vector<double> probabilities() const;
  // Starts an epoch: draws `count` positions with replacement from probabilities() (inverse-CDF on 53-bit
  // uniforms from rng, so a seed gives the same draws everywhere) and resets the epoch statistics.
  std::vector<int64_t> draw(int64_t count, std::mt19937_64& rng);
  // Records positions used in an epoch that was not sampled (uniform shuffle), for the statistics.
  void mark_seen(const std::vector<int64_t>& positions);
  // Statistics of the epoch's probabilities and coverage: sampler_ess (1/Σp² divided by N), sampler_seen_epoch and
  // sampler_seen_ever (shares of examples), sampler_p_min, sampler_p_max, sampler_p_uniform (1/N), sampler_rho_mean, sampler_cost_min and sampler_cost_max (Ĉ).
  nlohmann::json epoch_stats(bool sampled) const;

  const std::vector<double>& rho() const { return rho_; }

  // The whole state (ρ, Ĉ, coverage, the last probabilities) in a resume checkpoint, and back; load checks N.
  void save(torch::serialize::OutputArchive& ar) const;
  void load(torch::serialize::InputArchive& ar);

 private:
  SamplerOptions o_;
  std::vector<double> rho_, cost_;
  std::vector<char> has_rho_, seen_epoch_, seen_ever_;
  std::vector<double> last_p_;
};

}  // namespace cerebra
