// The batch every task produces and every model consumes, and what a model needs to know about its input.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace cerebra {

// One mini-batch. Tabular tasks fill num/cat; token tasks fill tokens/mask. y is the target.
struct Batch {
  torch::Tensor num;     // (B, Fn) float
  torch::Tensor cat;     // (B, Fc) int64
  torch::Tensor tokens;  // (B, n) int64
  torch::Tensor mask;    // (B, n) bool, true = real token
  torch::Tensor y;       // (B,) or (B, n): the target
  // Token classification: (B, n) bool, the positions where the task asks for a prediction (its query or answer
  // slots, known from the input format, not from the labels). Defined: the model runs its head there only and
  // returns (K, n_classes), the K true positions in row-major order. Undefined: every position, (B, n, n_classes).
  torch::Tensor answers;
  std::vector<std::string> text;  // text tasks: each example's raw text (what the bag-of-words baselines read)
  int64_t size() const {
    if (y.defined()) return y.size(0);
    if (num.defined()) return num.size(0);
    if (cat.defined()) return cat.size(0);
    return tokens.defined() ? tokens.size(0) : 0;
  }
};

// What a model needs to know about its input.
struct InputSchema {
  int64_t n_numeric = 0;
  std::vector<int64_t> cardinalities;  // tabular: per categorical feature
  int64_t n_outputs = 1;
};

}  // namespace cerebra
