#include "cerebra/models/mixer.h"

#include <stdexcept>

namespace cerebra {

namespace {
std::map<std::string, MixerFactory>& registry() {
  static std::map<std::string, MixerFactory> r;  // constructed on first use: safe during static initialisation
  return r;
}
}  // namespace

void register_mixer(const std::string& name, MixerFactory factory) {
  if (!registry().emplace(name, std::move(factory)).second)
    throw std::logic_error("mixer '" + name + "' is registered twice");
}

std::shared_ptr<SequenceMixer> make_mixer(const std::string& name, const MixerOptions& options) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& kv : registry()) known += (known.empty() ? "" : ", ") + kv.first;
    throw std::invalid_argument("unknown sequence mixer '" + name + "'; registered: " + known);
  }
  return it->second(options);
}

std::vector<std::string> mixer_names() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

}  // namespace cerebra
