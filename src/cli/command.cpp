#include "cerebra/cli/command.h"

#include <CLI/CLI.hpp>

namespace cerebra {

const std::function<int()>* Commands::parsed() const {
  for (const auto& [app, action] : list_)
    if (app->parsed()) return &action;
  return nullptr;
}

}  // namespace cerebra
