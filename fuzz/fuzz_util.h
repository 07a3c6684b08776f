// Helpers shared by the fuzz targets: a private scratch directory and whole-file writes.
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

namespace cerebra_fuzz {

// A directory of this process, created on first use (mkdtemp under TMPDIR or /tmp).
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/cerebra-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    return pattern;
  }();
  return dir;
}

inline std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) std::abort();
  return path;
}

}  // namespace cerebra_fuzz
