// `cerebra generate`: text from a trained character language model (task janeausten), one byte per step through
// Model::step, with the speed of the prompt's prefill and of the generation and the memory of the state at the end.
// `cerebra bench generate`: generation tokens/s, ms/token and state memory per model and context length, the
// measurement that shows a recurrent state's cost flat in the context and a key/value cache's growing with it.
//
// Sampling draws from softmax(logits / temperature) restricted to the top_k largest logits, in double precision,
// with the command's own std::mt19937_64 seeded by --seed (never LibTorch's generator): the same run, prompt and seed
// give the same text on every machine. Temperature 0 is greedy (the largest logit; the lowest byte on a tie), and
// then the seed does not matter.
#pragma once

#include <cstdint>
#include <random>

namespace at {
class Tensor;
}

namespace CLI {
class App;
}

namespace cerebra {

class Commands;

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = every token
};

// One token drawn from `logits` (vocab,) as described above; one draw of `rng` per token (none when greedy).
// Throws std::invalid_argument for a negative temperature or top_k, or logits that are not finite.
int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng);

// Adds `generate` (include/cerebra/cli/command.h).
CLI::App* add_generate_command(CLI::App* app, Commands& commands);
// Adds `generate` under `bench`.
CLI::App* add_bench_generate_command(CLI::App* bench, Commands& commands);

}  // namespace cerebra
