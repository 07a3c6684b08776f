// The paths of this checkout and build, compiled into this file alone (CMakeLists.txt).
#include "test_helpers.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "cerebra/core/io.h"

namespace cerebra::test {

std::string source_path(const std::string& rel) { return std::string(CEREBRA_SOURCE_DIR) + "/" + rel; }

std::string cerebra_binary() { return CEREBRA_BINARY; }

std::string read_log(const std::filesystem::path& log) {
  return std::filesystem::exists(log) ? read_text_file(log) : std::string();
}

pid_t spawn_cerebra(const std::vector<std::string>& args, const std::filesystem::path& log) {
  std::vector<std::string> argv_s = {cerebra_binary()};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log_s = log.string();
  const pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls until exec
    const int fd = ::open(log_s.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace cerebra::test
