// libFuzzer target: checkpoint files. The input is a torch archive as the library writes them (model.pt, resume.pt):
// the weights load into a model through load_model, then the readers of resume state run on the same archive (the
// pruner's state, which reshapes the model, the sampler's state, and scalars, vectors, JSON and named tensors).
// Each must succeed with a model that still runs, or throw c10::Error / std::runtime_error.
//
// With CEREBRA_FUZZ_WRITE_SEEDS=DIR set, the target writes its seed archives to DIR and exits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

#include <torch/torch.h>

#include "cerebra/core/state_archive.h"
#include "cerebra/models/pruning.h"
#include "cerebra/train/sampler.h"
#include "cerebra/train/train.h"
#include "fuzz_model.h"
#include "fuzz_util.h"

namespace {

constexpr int64_t kSamplerExamples = 4;

cerebra::PruneSchedule prune_schedule() {
  cerebra::PruneSchedule s;
  s.start_epoch = 1;
  s.epochs = 2;
  s.target = 0.5;
  return s;
}

void write_seeds(const std::string& dir) {
  auto model = cerebra_fuzz::tiny_model();
  cerebra::save_model(*model, dir + "/model.pt");
  // Resume state: a pruned model's pruner state, the sampler's, scalars and the best weights.
  cerebra::Pruner pruner(*model, prune_schedule());
  pruner.end_epoch(1);
  torch::serialize::OutputArchive ar;
  pruner.save(ar);
  cerebra::SamplerOptions so;
  so.enabled = true;
  cerebra::Sampler sampler(kSamplerExamples, so);
  std::mt19937_64 rng(1);
  sampler.draw(kSamplerExamples, rng);
  sampler.save(ar);
  cerebra::write_int(ar, "format", 1);
  cerebra::write_double(ar, "best_val_loss", 0.5);
  cerebra::write_ints(ar, "perm", {3, 1, 0, 2});
  std::vector<std::pair<std::string, torch::Tensor>> best;
  for (const auto& p : model->named_parameters()) best.emplace_back(p.key(), p.value());
  cerebra::write_tensors(ar, "best", best);
  torch::serialize::OutputArchive weights;
  model->save(weights);
  ar.write("model", weights);
  ar.save_to(dir + "/resume.pt");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("CEREBRA_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  cerebra_fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cerebra_fuzz::write_file("checkpoint.pt", std::string(reinterpret_cast<const char*>(data), size));

  // model.pt: the weights of a model of known shapes.
  {
    auto model = cerebra_fuzz::tiny_model();
    if (cerebra_fuzz::attempt([&] { cerebra::load_model(*model, path); })) cerebra_fuzz::forward_check(*model);
  }
  // The resume loader reads the archive as load_archive does (the integrity check, then LibTorch's reader) inside
  // one handler that turns any error into "cannot resume from ..."; the readers below must then throw only their own.
  torch::serialize::InputArchive ar;
  try {
    cerebra::load_archive(ar, path);
  } catch (const std::runtime_error&) {
    return 0;
  }
  // resume.pt: the pruner's state gives the model its shapes, then the weights of that model load.
  {
    auto model = cerebra_fuzz::tiny_model();
    cerebra::Pruner pruner(*model, prune_schedule());
    if (cerebra_fuzz::attempt([&] { pruner.load(ar); })) {
      cerebra_fuzz::forward_check(*model);
      pruner.report();
      pruner.end_epoch(2);
      cerebra_fuzz::forward_check(*model);
    }
  }
  {
    cerebra::SamplerOptions so;
    so.enabled = true;
    cerebra::Sampler sampler(kSamplerExamples, so);
    if (cerebra_fuzz::attempt([&] { sampler.load(ar); })) {
      sampler.epoch_stats(true);
      std::mt19937_64 rng(2);
      for (int64_t v : sampler.draw(kSamplerExamples, rng))
        if (v < 0 || v >= kSamplerExamples) std::abort();
    }
  }
  cerebra_fuzz::attempt([&] { cerebra::read_int(ar, "format"); });
  cerebra_fuzz::attempt([&] { cerebra::read_double(ar, "best_val_loss"); });
  cerebra_fuzz::attempt([&] { cerebra::read_ints(ar, "perm"); });
  cerebra_fuzz::attempt([&] { cerebra::read_doubles(ar, "rho"); });
  cerebra_fuzz::attempt([&] { cerebra::read_flags(ar, "has_rho"); });
  cerebra_fuzz::attempt([&] { cerebra::read_json(ar, "last_step"); });
  cerebra_fuzz::attempt([&] { cerebra::read_tensors(ar, "best"); });
  return 0;
}
