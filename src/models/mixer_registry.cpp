#include "cerebra/models/mixer.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <stdexcept>

namespace cerebra {

nlohmann::json SequenceMixer::own_options() const { return nlohmann::json::object(); }

int64_t MixerState::bytes() const {
  int64_t b = 0;
  for (const auto& [k, t] : tensors)
    if (t.defined()) b += t.numel() * static_cast<int64_t>(t.element_size());
  return b;
}

torch::Tensor SequenceMixer::step(const torch::Tensor& x, MixerState& state) {
  if (!is_causal()) throw std::logic_error("step: this mixer is not causal, so it cannot generate token by token");
  TORCH_CHECK(x.dim() == 3, "step: x must be (B, m, d), got ", x.sizes());
  auto& seen = state.tensors["inputs"];
  seen = seen.defined() ? torch::cat({seen, x}, 1) : x;
  state.position += x.size(1);
  return forward(seen, torch::Tensor()).slice(1, seen.size(1) - x.size(1));
}

namespace {
std::map<std::string, MixerDef>& registry() {
  static std::map<std::string, MixerDef> r;  // constructed on first use: safe during static initialisation
  return r;
}
}  // namespace

void register_mixer(MixerDef def) {
  register_config_keys(def.keys);
  const std::string name = def.name;
  if (!registry().emplace(name, std::move(def)).second)
    throw std::logic_error("mixer '" + name + "' is registered twice");
}

const MixerDef& mixer_def(const std::string& name) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& kv : registry()) known += (known.empty() ? "" : ", ") + kv.first;
    throw std::invalid_argument("unknown sequence mixer '" + name + "'; registered: " + known);
  }
  return it->second;
}

std::shared_ptr<SequenceMixer> make_mixer(const std::string& name, const MixerOptions& options) {
  return mixer_def(name).make(options);
}

MixerOptions with_own_options(const std::string& mixer, MixerOptions common,
                              const std::map<std::string, std::string>& overrides) {
  const MixerDef& def = mixer_def(mixer);
  Config config;
  for (const auto& [k, v] : overrides) config.set(k, v, "mixer " + mixer + " option");
  common.own = def.parse(config);
  return common;
}

std::vector<std::string> mixer_names() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

}  // namespace cerebra
