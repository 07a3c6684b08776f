// Shared by the tests of causal generation (SequenceMixer::step): building a causal mixer with chosen own options,
// and stepping it through a sequence in chunks against its full causal forward.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cerebra/models/mixer.h"

namespace cerebra::test {

// The causal form of mixer `name` (d_model d, `heads` heads, own options over the defaults), in eval mode.
inline std::shared_ptr<SequenceMixer> causal_mixer(const std::string& name,
                                                   const std::map<std::string, std::string>& own = {},
                                                   int64_t d = 16, int64_t heads = 2) {
  MixerOptions common;
  common.d_model = d;
  common.n_heads = heads;
  common.causal = true;
  auto mixer = make_mixer(name, with_own_options(name, common, own));
  mixer->eval();
  return mixer;
}

// Steps x (B, n, d) through the mixer in the given chunks (summing to n) from `state`; expects the stepped rows to
// equal forward()'s within 1e-4 and the state to have advanced by n. Returns max |step − forward|.
inline double expect_steps_like_forward(SequenceMixer& mixer, const torch::Tensor& x,
                                        const std::vector<int64_t>& chunks, MixerState& state) {
  torch::NoGradGuard no_grad;
  const auto full = mixer.forward(x, torch::Tensor());
  const int64_t start = state.position;
  std::vector<torch::Tensor> ys;
  int64_t at = 0;
  for (int64_t m : chunks) {
    ys.push_back(mixer.step(x.slice(1, at, at + m), state));
    at += m;
  }
  EXPECT_EQ(at, x.size(1)) << "the chunks must cover the sequence";
  EXPECT_EQ(state.position - start, x.size(1));
  const auto stepped = torch::cat(ys, 1);
  const double err = (stepped - full).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(stepped, full, 1e-4, 1e-4)) << "max |step - forward| = " << err;
  return err;
}

inline MixerState expect_steps_like_forward(SequenceMixer& mixer, const torch::Tensor& x,
                                            const std::vector<int64_t>& chunks) {
  MixerState state;
  expect_steps_like_forward(mixer, x, chunks, state);
  return state;
}

}  // namespace cerebra::test
