#include "cerebra/core/io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <nlohmann/json.hpp>

namespace cerebra {

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": invalid JSON: " + e.what());
  }
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path.string());
  f << text;
  f.flush();
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

namespace {

// fsync of a file or directory; throws naming it.
void sync_path(const std::filesystem::path& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path.string() + " to sync it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error("cannot sync " + path.string() + ": " + std::strerror(err));
}

}  // namespace

void write_file_atomic(const std::filesystem::path& path, const std::function<void(const std::string& tmp)>& write) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  try {
    write(tmp.string());
    sync_path(tmp, false);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  sync_path(dir, true);
}

void write_text_file_atomic(const std::filesystem::path& path, const std::string& text) {
  write_file_atomic(path, [&](const std::string& tmp) { write_text_file(tmp, text); });
}

void check_writable_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot write to " + dir.string() + ": " + ec.message());
  const std::filesystem::path probe = dir / ".cerebra-write-probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write to " + dir.string() + ": " + std::strerror(errno));
  const std::string bytes(4096, 'x');
  const bool ok = ::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()) && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  std::filesystem::remove(probe, ec);
  if (!ok) throw std::runtime_error("cannot write to " + dir.string() + ": " + std::strerror(err));
}

}  // namespace cerebra
