// The one way a subcommand of `cerebra` is registered: an `add_*_command(parent, commands)` function adds the
// CLI::App with its options (bound to state its action owns) and registers the action that runs after parsing.
// main() parses once and runs the action of the subcommand given.
#pragma once

#include <functional>
#include <utility>
#include <vector>

namespace CLI {
class App;
}

namespace cerebra {

class Commands {
 public:
  // `action` returns the exit code; errors are thrown (main turns them into messages and exit codes).
  void add(CLI::App* sub, std::function<int()> action) { list_.emplace_back(sub, std::move(action)); }
  // After parsing: the action of the subcommand given on the command line, or nullptr when none was.
  const std::function<int()>* parsed() const;

 private:
  std::vector<std::pair<CLI::App*, std::function<int()>>> list_;
};

}  // namespace cerebra
