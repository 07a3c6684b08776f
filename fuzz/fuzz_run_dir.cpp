// libFuzzer target: a run directory as `cerebra eval --run` / `export` / `train --resume` read it. The input holds
// the files: text up to the first marker line is config.yaml; a line "@@ NAME" starts file NAME (config.yaml,
// pruned.json, summary.json or model.pt). Then: the resume check (run_progress), the run's spec (read_run_spec),
// and a model of the run's kind takes pruned.json's shapes and model.pt's weights (load_prune_state, load_model)
// and must still run. Errors must be ConfigError, c10::Error or std::runtime_error.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "cerebra/core/config.h"
#include "cerebra/models/pruning.h"
#include "cerebra/train/run.h"
#include "cerebra/train/train.h"
#include "fuzz_model.h"
#include "fuzz_util.h"

namespace fs = std::filesystem;

namespace {

const char* const kFiles[] = {"config.yaml", "pruned.json", "summary.json", "model.pt"};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cerebra_fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const fs::path dir = fs::path(cerebra_fuzz::scratch_dir()) / "run";
  fs::create_directories(dir);
  for (const char* f : kFiles) fs::remove(dir / f);

  std::string name = "config.yaml";
  size_t pos = 0;
  bool has_model = false;
  while (pos <= text.size()) {
    size_t marker = text.find("\n@@ ", pos);
    const size_t end = marker == std::string::npos ? text.size() : marker;
    bool known = false;
    for (const char* f : kFiles) known = known || name == f;
    if (known) {
      cerebra_fuzz::write_file("run/" + name, text.substr(pos, end - pos));
      has_model = has_model || name == "model.pt";
    }
    if (marker == std::string::npos) break;
    const size_t line_end = text.find('\n', marker + 4);
    name = text.substr(marker + 4, line_end == std::string::npos ? std::string::npos : line_end - marker - 4);
    pos = line_end == std::string::npos ? text.size() + 1 : line_end + 1;
  }

  const cerebra::RunProgress progress = cerebra::run_progress(cerebra::Config(), dir.string());
  (void)progress;
  cerebra_fuzz::attempt([&] { cerebra::read_run_spec(dir.string(), 1); });
  if (!fs::exists(dir / "pruned.json") && !has_model) return 0;
  auto model = cerebra_fuzz::tiny_model();
  if (!cerebra_fuzz::attempt([&] { cerebra::load_prune_state(*model, dir.string()); })) return 0;
  cerebra_fuzz::forward_check(*model);
  if (has_model && cerebra_fuzz::attempt([&] { cerebra::load_model(*model, (dir / "model.pt").string()); }))
    cerebra_fuzz::forward_check(*model);
  return 0;
}
