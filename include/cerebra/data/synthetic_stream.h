// Streaming generators for the long-context synthetic tasks: multi-query associative recall (MQAR, as in Zoology),
// selective copy (as in Mamba §4.1) and induction heads (as in H3 / Mamba). Plain C++, no LibTorch.
//
// Streaming: an example is a pure function of a 64-bit key, and the key of an example is a strong hash of
// (seed, split, step, index_in_batch) (stream_key). Training step s reads the examples (seed, kTrain, s, 0..B-1), so
// every step sees fresh examples, nothing is held in memory and there is no pool to memorise; the validation and test
// sets are the fixed examples (seed, kVal, 0, i) and (seed, kTest, 0, i), i < their size. Inside an example a small
// local generator (xoshiro256**, seeded from the key by SplitMix64) draws everything. Integer draws are exact on every
// platform; MQAR's power-law gaps go through std::log / std::pow, so they are bit-identical for a given C library.
//
// Token ids (as in seq_tasks.h): 0 PAD, 1 NOISE, 2 SEP, 3 BLANK, data tokens 4 .. vocab_size-1. PAD never appears in a
// generated example (it stays free for batch padding). Every example has exactly seq_len tokens and seq_len targets;
// a target is -100 (ignored) except at an answer position, where it is the token to predict there. No answer is placed
// in the input at or after its answer position (random MQAR filler may repeat a key or a value by chance, as in
// Zoology), so the tasks suit non-causal mixers as well as causal ones.
//
//   mqar            [k1 v1 k2 v2 ... kP vP][remainder: Q query keys at power-law gaps, filler elsewhere]
//                   keys are distinct tokens of the lower half of the data tokens, values distinct tokens of the
//                   upper half; query j sits at position 2P + 2*gap_j (gap_j in [0, (T - 2P) / 2), distinct), its
//                   token is a context key and its target that key's value. Filler: uniform data tokens
//                   (random_non_queries) or NOISE.
//   selective_copy  [n data tokens at sorted random positions among NOISE; T - n tokens][n BLANK]
//                   the target at the i-th BLANK is the i-th data token of the region (in order).
//   induction_heads [filler with trigger_j X_j bigrams, num_triggers per query][trigger_pi(1) .. trigger_pi(Q)]
//                   trigger_j = data token 4 + j is reserved (never filler); the last Q positions repeat the
//                   triggers in random order and the target at trigger_j is X_j, the token that followed it.
//
// MQAR against Zoology (HazyResearch/zoology, zoology/data/multiquery_ar.py, formerly associative_recall.py,
// function multiquery_ar). Matched: the layout k v k v ... of num_kv_pairs pairs at the start; keys and values
// distinct within an example (drawn without replacement) from disjoint halves of the vocabulary; query gaps drawn
// without replacement with p(g) ∝ power_a · (g+1)^(power_a-1), g in [0, (T - 2P) / 2) (numpy's sequential
// choice(replace=False, p=...)); gap j in draw order goes to the j-th queried pair in context order (with all pairs
// queried, pair i gets the i-th drawn gap, as Zoology's put_along_axis(gaps * 2, keys) does); query at offset 2*gap
// from the end of the context; target at the query position only (Zoology's labels shifted by one); the remainder's
// other positions uniform random tokens when random_non_queries, else a fixed filler; defaults (vocab 8192, seq_len 64,
// 8 pairs, power_a 0.01, random_non_queries). Different: the halves split the data tokens 4..V-1 (keys
// [4, 4 + (V-4)/2), values the rest), not [1, V/2) and [V/2, V); random filler is drawn from the data tokens only
// (Zoology draws from all of [0, V), including its 0); the non-random filler is NOISE (1), not 0, and 0 stays PAD;
// num_queries may be fewer than num_kv_pairs (a uniformly chosen subset of the pairs is queried; Zoology queries all);
// seq_len need not be even nor smaller than vocab_size (Zoology asserts both; neither is needed by the layout);
// Zoology's num_passes (JRT repetition of the context) is not implemented.
//
// Selective copy against Mamba §4.1, taken concretely from the selective variant (variable=True) of the copying
// generator of state-spaces/s4 (src/dataloaders/datasets/copying.py, torch_copying_data), which lays out the task as
// the paper describes it: matched: data tokens uniform with replacement, at sorted uniformly chosen
// distinct positions of a region of length seq_len - num_data, then num_data marker tokens whose outputs are the data
// tokens in order. Different: noise is NOISE (1), not 0; markers are BLANK (3), not vocab-1; data tokens are 4..V-1.
// (seq_tasks.h's selective_copy also puts a SEP before the markers; here, as in s4, there is none.)
//
// Induction heads against H3 (HazyResearch/safari, src/dataloaders/synthetics.py, generate_induction_head): matched:
// uniform random filler excluding the trigger; the trigger followed by X at random non-overlapping positions;
// the sequence ends with the trigger and the target there is X (induction_len 1). Different: targets only at the
// queries (H3 trains on next-token prediction everywhere); exactly num_triggers occurrences (H3 drops overlapping ones
// and uses one trigger in half of the examples); the trigger is the reserved data token 4 (H3: a special token
// outside the vocabulary); num_queries > 1 adds further distinct triggers 5, 6, ... each with its own X, all queried
// at the end; the length is seq_len in total (H3: input_seq_len + 1).
#pragma once

#include <cstdint>
#include <vector>

namespace cerebra {

namespace stream {

constexpr int64_t kPad = 0, kNoise = 1, kSep = 2, kBlank = 3, kFirstData = 4, kIgnore = -100;
// Split ids for stream_key (the values of Part).
constexpr int kTrain = 0, kVal = 1, kTest = 2;

// SplitMix64's output function applied to x + golden gamma: a bijective 64-bit mixer.
uint64_t mix64(uint64_t x);

// The local generator of one example: xoshiro256**, its state filled from the key by SplitMix64.
class StreamRng {
 public:
  explicit StreamRng(uint64_t key);
  uint64_t next();
  int64_t below(int64_t n);  // uniform in [0, n), n >= 1, unbiased
  double unit();             // uniform in [0, 1), 53 bits
  double exponential();      // Exp(1)

 private:
  uint64_t s_[4];
};

// Zoology's gap distribution: p(g) = power_a · (g+1)^(power_a-1) / Z for g = 0 .. space-1 (sums to 1).
// power_a = 1 is uniform; small power_a puts most mass on small gaps.
std::vector<double> power_law_probs(int64_t space, double power_a);

// `count` distinct gaps of [0, space), in draw order: each draw picks among the gaps not yet drawn with probability
// proportional to (g+1)^(power_a-1) (numpy's choice(space, count, replace=False, p=power_law_probs(...))).
// Exponential races: gap g rings at Exp(1) / w_g, and the first `count` rings are the draws in order. O(space).
std::vector<int64_t> power_law_gaps(int64_t space, int64_t count, double power_a, StreamRng& rng);

// `count` distinct values of [lo, hi), uniformly at random and in random order (count <= hi - lo).
std::vector<int64_t> distinct_values(StreamRng& rng, int64_t lo, int64_t hi, int64_t count);

}  // namespace stream

struct StreamExample {
  std::vector<int64_t> tokens;   // (seq_len,) token ids
  std::vector<int64_t> targets;  // (seq_len,) -100 except at answer positions
};

// The key of example `index` of a batch at training step `step` (split kTrain), or of fixed example `index` of the
// validation / test set (split kVal / kTest, step 0). Distinct tuples give unrelated keys.
// Throws std::invalid_argument when split, step or index is negative.
uint64_t stream_key(uint64_t seed, int split, int64_t step, int64_t index);

// ---- MQAR (Zoology multiquery_ar)
struct MqarSpec {
  int64_t seq_len = 64;             // T, tokens per example
  int64_t vocab_size = 8192;        // V; keys and values split the data tokens 4..V-1 in two halves
  int64_t num_kv_pairs = 8;         // P, pairs at the start of the sequence
  int64_t num_queries = 0;          // Q, queried pairs (distinct), 0 = num_kv_pairs (Zoology: every pair)
  double power_a = 0.01;            // gap distribution p(g) ∝ (g+1)^(power_a-1)
  bool random_non_queries = true;   // remainder filler: uniform data tokens (true) or NOISE (false)
};
// Throws std::invalid_argument naming the parameter when the spec cannot hold the task.
void validate_mqar(const MqarSpec& spec);
int64_t mqar_num_queries(const MqarSpec& spec);   // Q with 0 resolved
int64_t mqar_first_value(int64_t vocab_size);     // first value token: 4 + (V-4)/2; keys are [4, this)
int64_t mqar_gap_space(const MqarSpec& spec);     // number of possible gaps: (T - 2P) / 2
StreamExample make_mqar(const MqarSpec& spec, uint64_t key);

// ---- selective copy (Mamba §4.1)
struct SelectiveCopySpec {
  int64_t seq_len = 4096;    // T = region (T - num_data) + num_data answer positions
  int64_t vocab_size = 16;   // data tokens 4..V-1
  int64_t num_data = 16;     // data tokens to copy
};
void validate_selective_copy(const SelectiveCopySpec& spec);
StreamExample make_selective_copy(const SelectiveCopySpec& spec, uint64_t key);

// ---- induction heads (H3 / Mamba)
struct InductionHeadsSpec {
  int64_t seq_len = 256;     // T = context (T - num_queries) + num_queries query positions
  int64_t vocab_size = 16;   // triggers 4..4+Q-1 (reserved), filler and X from 4+Q..V-1
  int64_t num_triggers = 1;  // occurrences of each trigger-X bigram in the context
  int64_t num_queries = 1;   // Q, distinct triggers queried at the end
};
void validate_induction_heads(const InductionHeadsSpec& spec);
StreamExample make_induction_heads(const InductionHeadsSpec& spec, uint64_t key);

}  // namespace cerebra
