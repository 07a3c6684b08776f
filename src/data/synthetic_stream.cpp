#include "cerebra/data/synthetic_stream.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace cerebra {

namespace stream {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

StreamRng::StreamRng(uint64_t key) {
  // SplitMix64 stream from the key: never all-zero state words in practice, and unrelated states for nearby keys.
  for (int i = 0; i < 4; ++i) {
    s_[i] = mix64(key);
    key += 0x9e3779b97f4a7c15ULL;
  }
}

namespace {
uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

uint64_t StreamRng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

int64_t StreamRng::below(int64_t n) {
  // Rejection of the top partial block keeps every residue equally likely.
  const uint64_t m = static_cast<uint64_t>(n);
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % m;
  uint64_t x = next();
  while (x >= limit) x = next();
  return static_cast<int64_t>(x % m);
}

double StreamRng::unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double StreamRng::exponential() { return -std::log1p(-unit()); }  // 1 - u in (0, 1]: finite

std::vector<double> power_law_probs(int64_t space, double power_a) {
  std::vector<double> p(static_cast<size_t>(std::max<int64_t>(space, 0)));
  double total = 0;
  for (int64_t g = 0; g < space; ++g) total += p[g] = power_a * std::pow(static_cast<double>(g + 1), power_a - 1);
  for (double& v : p) v /= total;
  return p;
}

std::vector<int64_t> power_law_gaps(int64_t space, int64_t count, double power_a, StreamRng& rng) {
  // (space,) ring time of each gap: Exp(1) / w_g with w_g = (g+1)^(power_a-1). The earliest ring among the gaps not
  // yet drawn is gap g with probability w_g / (sum of their w), so ring order is sequential weighted sampling.
  std::vector<double> ring(static_cast<size_t>(space));
  for (int64_t g = 0; g < space; ++g) ring[g] = rng.exponential() * std::pow(static_cast<double>(g + 1), 1 - power_a);
  std::vector<int64_t> order(static_cast<size_t>(space));
  std::iota(order.begin(), order.end(), 0);
  auto earlier = [&](int64_t a, int64_t b) { return ring[a] < ring[b] || (ring[a] == ring[b] && a < b); };
  std::nth_element(order.begin(), order.begin() + count, order.end(), earlier);
  order.resize(static_cast<size_t>(count));
  std::sort(order.begin(), order.end(), earlier);
  return order;
}

std::vector<int64_t> distinct_values(StreamRng& rng, int64_t lo, int64_t hi, int64_t count) {
  const int64_t range = hi - lo;
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(count));
  if (range <= 4 * count) {  // dense: partial Fisher-Yates over the whole range
    std::vector<int64_t> v(static_cast<size_t>(range));
    std::iota(v.begin(), v.end(), lo);
    for (int64_t i = 0; i < count; ++i) {
      std::swap(v[i], v[i + rng.below(range - i)]);
      out.push_back(v[i]);
    }
    return out;
  }
  // sparse: redraw repeats (each draw is new with probability > 3/4)
  std::unordered_set<int64_t> seen;
  seen.reserve(static_cast<size_t>(2 * count));
  while (static_cast<int64_t>(out.size()) < count) {
    const int64_t v = lo + rng.below(range);
    if (seen.insert(v).second) out.push_back(v);
  }
  return out;
}

}  // namespace stream

namespace {

// "task: message" as std::invalid_argument.
[[noreturn]] void fail(const char* task, const std::string& message) {
  throw std::invalid_argument(std::string(task) + ": " + message);
}

std::string str(int64_t v) { return std::to_string(v); }

StreamExample blank_example(int64_t seq_len, int64_t fill) {
  StreamExample e;
  e.tokens.assign(static_cast<size_t>(seq_len), fill);
  e.targets.assign(static_cast<size_t>(seq_len), stream::kIgnore);
  return e;
}

// Uniform data token of [lo, vocab_size).
int64_t token_in(stream::StreamRng& rng, int64_t lo, int64_t vocab_size) { return lo + rng.below(vocab_size - lo); }

}  // namespace

uint64_t stream_key(uint64_t seed, int split, int64_t step, int64_t index) {
  if (split < 0) throw std::invalid_argument("stream_key: split must be >= 0, got " + std::to_string(split));
  if (step < 0) throw std::invalid_argument("stream_key: step must be >= 0, got " + str(step));
  if (index < 0) throw std::invalid_argument("stream_key: index must be >= 0, got " + str(index));
  // Each field goes through its own salted mixer before it is folded in, so no field can cancel another.
  uint64_t h = stream::mix64(seed ^ 0x243f6a8885a308d3ULL);
  h = stream::mix64(h ^ stream::mix64(static_cast<uint64_t>(split) + 0x13198a2e03707344ULL));
  h = stream::mix64(h ^ stream::mix64(static_cast<uint64_t>(step) + 0xa4093822299f31d0ULL));
  h = stream::mix64(h ^ stream::mix64(static_cast<uint64_t>(index) + 0x082efa98ec4e6c89ULL));
  return h;
}

// ---- MQAR

int64_t mqar_num_queries(const MqarSpec& s) { return s.num_queries == 0 ? s.num_kv_pairs : s.num_queries; }

int64_t mqar_first_value(int64_t vocab_size) { return stream::kFirstData + (vocab_size - stream::kFirstData) / 2; }

int64_t mqar_gap_space(const MqarSpec& s) { return (s.seq_len - 2 * s.num_kv_pairs) / 2; }

void validate_mqar(const MqarSpec& s) {
  const char* task = "mqar";
  const int64_t P = s.num_kv_pairs, Q = mqar_num_queries(s);
  if (P < 1) fail(task, "num_kv_pairs must be >= 1, got " + str(P));
  if (s.num_queries < 0 || s.num_queries > P)
    fail(task, "num_queries must be in [1, num_kv_pairs = " + str(P) + "] (0 = num_kv_pairs), got " +
                   str(s.num_queries));
  const int64_t keys = mqar_first_value(s.vocab_size) - stream::kFirstData;  // the value half is at least as large
  if (keys < P)
    fail(task, "vocab_size " + str(s.vocab_size) + " has " + str(std::max<int64_t>(keys, 0)) +
                   " key tokens (the lower half of the data tokens 4..vocab_size-1) for num_kv_pairs = " + str(P) +
                   " distinct keys; vocab_size must be >= " + str(stream::kFirstData + 2 * P));
  if (2 * P + 2 * Q > s.seq_len)
    fail(task, "seq_len " + str(s.seq_len) + " cannot hold 2*num_kv_pairs = " + str(2 * P) +
                   " context tokens plus 2*num_queries = " + str(2 * Q) +
                   " tokens of query slots (a query and the slot after it); seq_len must be >= " + str(2 * P + 2 * Q));
  if (!(std::isfinite(s.power_a) && s.power_a > 0)) {
    std::ostringstream m;
    m << "power_a must be a finite number > 0 (1 = uniform gaps), got " << s.power_a;
    fail(task, m.str());
  }
}

StreamExample make_mqar(const MqarSpec& s, uint64_t key) {
  validate_mqar(s);
  stream::StreamRng rng(key);
  const int64_t T = s.seq_len, V = s.vocab_size, P = s.num_kv_pairs, Q = mqar_num_queries(s);
  const int64_t first_value = mqar_first_value(V);
  StreamExample e = blank_example(T, stream::kNoise);

  // (P,) keys and values, each distinct, from the two halves; context k1 v1 k2 v2 ...
  const std::vector<int64_t> keys = stream::distinct_values(rng, stream::kFirstData, first_value, P);
  const std::vector<int64_t> values = stream::distinct_values(rng, first_value, V, P);
  for (int64_t i = 0; i < P; ++i) {
    e.tokens[2 * i] = keys[i];
    e.tokens[2 * i + 1] = values[i];
  }

  // (Q,) queried pairs in context order (all of them when Q = P), paired with the gaps in draw order.
  std::vector<int64_t> asked(static_cast<size_t>(P));
  std::iota(asked.begin(), asked.end(), 0);
  if (Q < P) {
    asked = stream::distinct_values(rng, 0, P, Q);
    std::sort(asked.begin(), asked.end());
  }
  const std::vector<int64_t> gaps = stream::power_law_gaps(mqar_gap_space(s), Q, s.power_a, rng);
  for (int64_t j = 0; j < Q; ++j) {
    const int64_t pos = 2 * P + 2 * gaps[j];
    e.tokens[pos] = keys[asked[j]];
    e.targets[pos] = values[asked[j]];
  }

  if (s.random_non_queries)
    for (int64_t pos = 2 * P; pos < T; ++pos)
      if (e.targets[pos] == stream::kIgnore) e.tokens[pos] = token_in(rng, stream::kFirstData, V);
  return e;
}

// ---- selective copy

void validate_selective_copy(const SelectiveCopySpec& s) {
  const char* task = "selective_copy";
  if (s.num_data < 1) fail(task, "num_data must be >= 1, got " + str(s.num_data));
  if (s.vocab_size < stream::kFirstData + 1)
    fail(task, "vocab_size must be >= " + str(stream::kFirstData + 1) +
                   " (4 special tokens + at least 1 data token), got " + str(s.vocab_size));
  if (s.seq_len < 2 * s.num_data)
    fail(task, "seq_len " + str(s.seq_len) + " cannot hold num_data = " + str(s.num_data) +
                   " data tokens in a region of seq_len - num_data plus num_data answer positions; seq_len must "
                   "be >= 2*num_data = " + str(2 * s.num_data));
}

StreamExample make_selective_copy(const SelectiveCopySpec& s, uint64_t key) {
  validate_selective_copy(s);
  stream::StreamRng rng(key);
  const int64_t n = s.num_data, region = s.seq_len - n;
  StreamExample e = blank_example(s.seq_len, stream::kNoise);
  std::vector<int64_t> where = stream::distinct_values(rng, 0, region, n);  // (n,) data positions, in order
  std::sort(where.begin(), where.end());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t token = token_in(rng, stream::kFirstData, s.vocab_size);
    e.tokens[where[i]] = token;
    e.tokens[region + i] = stream::kBlank;
    e.targets[region + i] = token;
  }
  return e;
}

// ---- induction heads

void validate_induction_heads(const InductionHeadsSpec& s) {
  const char* task = "induction_heads";
  const int64_t Q = s.num_queries, m = s.num_triggers;
  if (Q < 1) fail(task, "num_queries must be >= 1, got " + str(Q));
  if (m < 1) fail(task, "num_triggers must be >= 1, got " + str(m));
  if (s.vocab_size < stream::kFirstData + Q + 1)
    fail(task, "vocab_size must be >= " + str(stream::kFirstData + Q + 1) + " (4 special tokens, num_queries = " +
                   str(Q) + " reserved trigger tokens and at least 1 filler token), got " + str(s.vocab_size));
  if (s.seq_len < 2 * Q * m + Q)
    fail(task, "seq_len " + str(s.seq_len) + " cannot hold num_queries * num_triggers = " + str(Q * m) +
                   " trigger-X bigrams plus num_queries = " + str(Q) + " queries; seq_len must be >= " +
                   str(2 * Q * m + Q));
}

StreamExample make_induction_heads(const InductionHeadsSpec& s, uint64_t key) {
  validate_induction_heads(s);
  stream::StreamRng rng(key);
  const int64_t Q = s.num_queries, m = s.num_triggers, context = s.seq_len - Q, first_filler = stream::kFirstData + Q;
  StreamExample e = blank_example(s.seq_len, stream::kNoise);
  for (int64_t pos = 0; pos < context; ++pos) e.tokens[pos] = token_in(rng, first_filler, s.vocab_size);

  // (Q,) X_j, the token that follows trigger j.
  std::vector<int64_t> follower(static_cast<size_t>(Q));
  for (auto& x : follower) x = token_in(rng, first_filler, s.vocab_size);

  // Q*m non-overlapping two-token windows, uniform over all placements: sorted distinct starts of
  // [0, context - Q*m) shifted by their rank; then dealt to the triggers in random order.
  const int64_t windows = Q * m;
  std::vector<int64_t> start = stream::distinct_values(rng, 0, context - windows, windows);
  std::sort(start.begin(), start.end());
  for (int64_t w = 0; w < windows; ++w) start[w] += w;
  for (int64_t w = windows - 1; w > 0; --w) std::swap(start[w], start[rng.below(w + 1)]);
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t j = w / m;
    e.tokens[start[w]] = stream::kFirstData + j;
    e.tokens[start[w] + 1] = follower[j];
  }

  // The last Q positions: every trigger once, in random order; target X_j.
  const std::vector<int64_t> order = stream::distinct_values(rng, 0, Q, Q);
  for (int64_t i = 0; i < Q; ++i) {
    e.tokens[context + i] = stream::kFirstData + order[i];
    e.targets[context + i] = follower[order[i]];
  }
  return e;
}

}  // namespace cerebra
