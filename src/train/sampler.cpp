// The compute-aware sampler. Formula and conventions: include/cerebra/sampler.h.
#include "cerebra/train/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <nlohmann/json.hpp>

#include "cerebra/core/config.h"
#include "cerebra/core/state_archive.h"

namespace cerebra {

void SamplerOptions::validate() const {
  if (!(floor >= 0 && floor <= 1)) throw ConfigError("sampler_floor must be in [0, 1], got " + std::to_string(floor));
  if (!(ema >= 0 && ema < 1)) throw ConfigError("sampler_ema must be in [0, 1), got " + std::to_string(ema));
  if (start_epoch < 1) throw ConfigError("sampler_start_epoch must be >= 1, got " + std::to_string(start_epoch));
  if (!std::isfinite(beta) || !std::isfinite(gamma)) throw ConfigError("sampler_beta and sampler_gamma must be finite");
}

Sampler::Sampler(int64_t n, const SamplerOptions& o) : o_(o) {
  if (n < 1) throw std::invalid_argument("sampler: needs at least one example");
  o_.validate();
  const auto N = static_cast<size_t>(n);
  rho_.assign(N, 0.0);
  cost_.assign(N, 1.0);
  has_rho_.assign(N, 0);
  seen_epoch_.assign(N, 0);
  seen_ever_.assign(N, 0);
}

void Sampler::observe_cost(const std::vector<int64_t>& pos, const std::vector<double>& cost) {
  if (pos.size() != cost.size())
    throw std::invalid_argument("sampler: " + std::to_string(cost.size()) + " costs for " +
                                std::to_string(pos.size()) + " positions");
  for (size_t i = 0; i < pos.size(); ++i) {
    const auto j = static_cast<size_t>(pos[i]);
    if (j >= cost_.size()) throw std::out_of_range("sampler: position " + std::to_string(pos[i]) + " out of range");
    if (!std::isfinite(cost[i])) throw std::invalid_argument("sampler: compute estimate is not finite");
    cost_[j] = cost[i];
  }
}

void Sampler::observe(const std::vector<int64_t>& pos, const std::vector<double>& losses) {
  if (pos.size() != losses.size()) throw std::invalid_argument("sampler: positions and losses differ in length");
  for (size_t i = 0; i < pos.size(); ++i) {
    const auto j = static_cast<size_t>(pos[i]);
    if (j >= rho_.size()) throw std::out_of_range("sampler: position " + std::to_string(pos[i]) + " out of range");
    if (!std::isfinite(losses[i])) continue;
    rho_[j] = has_rho_[j] ? o_.ema * rho_[j] + (1.0 - o_.ema) * losses[i] : losses[i];
    has_rho_[j] = 1;
  }
}

std::vector<double> Sampler::probabilities() const {
  const size_t N = rho_.size();
  double sum = 0;
  size_t seen = 0;
  for (size_t i = 0; i < N; ++i)
    if (has_rho_[i]) sum += rho_[i], ++seen;
  const double mean = seen > 0 ? sum / static_cast<double>(seen) : 0.0;
  std::vector<double> logit(N);
  for (size_t i = 0; i < N; ++i) {
    const double r = !has_rho_[i] || mean <= 0 ? 1.0 : rho_[i] / mean;
    logit[i] = o_.beta * r - o_.gamma * cost_[i];
  }
  const double mx = *std::max_element(logit.begin(), logit.end());
  double z = 0;
  std::vector<double> p(N);
  for (size_t i = 0; i < N; ++i) z += (p[i] = std::exp(logit[i] - mx));
  const double uniform = 1.0 / static_cast<double>(N);
  for (auto& v : p) v = (1.0 - o_.floor) * v / z + o_.floor * uniform;
  return p;
}

std::vector<int64_t> Sampler::draw(int64_t count, std::mt19937_64& rng) {
  last_p_ = probabilities();
  std::vector<double> cdf(last_p_.size());
  std::partial_sum(last_p_.begin(), last_p_.end(), cdf.begin());
  const double total = cdf.back();
  std::fill(seen_epoch_.begin(), seen_epoch_.end(), 0);
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (auto& v : out) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * total;  // [0, total)
    auto it = std::upper_bound(cdf.begin(), cdf.end(), u);
    v = std::min<int64_t>(static_cast<int64_t>(it - cdf.begin()), static_cast<int64_t>(cdf.size()) - 1);
    seen_epoch_[static_cast<size_t>(v)] = seen_ever_[static_cast<size_t>(v)] = 1;
  }
  return out;
}

void Sampler::mark_seen(const std::vector<int64_t>& positions) {
  last_p_.clear();
  std::fill(seen_epoch_.begin(), seen_epoch_.end(), 0);
  for (auto v : positions) seen_epoch_.at(static_cast<size_t>(v)) = seen_ever_.at(static_cast<size_t>(v)) = 1;
}

nlohmann::json Sampler::epoch_stats(bool sampled) const {
  const double N = static_cast<double>(rho_.size());
  std::vector<double> p = sampled && !last_p_.empty() ? last_p_ : std::vector<double>(rho_.size(), 1.0 / N);
  double sq = 0, rho_sum = 0, seen_rho = 0;
  for (double v : p) sq += v * v;
  for (size_t i = 0; i < rho_.size(); ++i)
    if (has_rho_[i]) rho_sum += rho_[i], seen_rho += 1;
  const auto share = [&](const std::vector<char>& f) {
    return static_cast<double>(std::count(f.begin(), f.end(), 1)) / N;
  };
  return {{"sampler_active", sampled},
          {"sampler_ess", 1.0 / sq / N},
          {"sampler_seen_epoch", share(seen_epoch_)},
          {"sampler_seen_ever", share(seen_ever_)},
          {"sampler_p_min", *std::min_element(p.begin(), p.end())},
          {"sampler_p_max", *std::max_element(p.begin(), p.end())},
          {"sampler_p_uniform", 1.0 / N},
          {"sampler_rho_mean", seen_rho > 0 ? rho_sum / seen_rho : 0.0},
          {"sampler_cost_min", *std::min_element(cost_.begin(), cost_.end())},
          {"sampler_cost_max", *std::max_element(cost_.begin(), cost_.end())}};
}

void Sampler::save(torch::serialize::OutputArchive& ar) const {
  write_doubles(ar, "rho", rho_);
  write_doubles(ar, "cost", cost_);
  write_flags(ar, "has_rho", has_rho_);
  write_flags(ar, "seen_epoch", seen_epoch_);
  write_flags(ar, "seen_ever", seen_ever_);
  write_doubles(ar, "last_p", last_p_);
}

void Sampler::load(torch::serialize::InputArchive& ar) {
  auto rho = read_doubles(ar, "rho");
  if (rho.size() != rho_.size())
    throw std::runtime_error("sampler state holds " + std::to_string(rho.size()) + " examples, this run has " +
                             std::to_string(rho_.size()));
  rho_ = std::move(rho);
  cost_ = read_doubles(ar, "cost");
  has_rho_ = read_flags(ar, "has_rho");
  seen_epoch_ = read_flags(ar, "seen_epoch");
  seen_ever_ = read_flags(ar, "seen_ever");
  last_p_ = read_doubles(ar, "last_p");
  for (size_t n : {cost_.size(), has_rho_.size(), seen_epoch_.size(), seen_ever_.size()})
    if (n != rho_.size()) throw std::runtime_error("sampler state: vectors of different lengths");
}

}  // namespace cerebra
