// Small file helpers shared by runs, sweeps, reports and exports. Errors name the file.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace cerebra {

// The whole file as text; throws std::runtime_error("cannot read PATH") when it cannot be opened.
std::string read_text_file(const std::filesystem::path& path);
// Parsed JSON; throws "PATH: invalid JSON: ..." on a parse error.
nlohmann::json read_json_file(const std::filesystem::path& path);
// Writes `text` to `path` (replacing it); throws "cannot write PATH".
void write_text_file(const std::filesystem::path& path, const std::string& text);
// Writes `path` atomically: `write` fills PATH.tmp (same directory), which is flushed to disk (fsync) and renamed
// over PATH, then the directory is synced. A reader, or a crash or kill at any moment, sees the old file or the new
// one, never a part of one; a failed write leaves the old file in place.
void write_file_atomic(const std::filesystem::path& path, const std::function<void(const std::string& tmp)>& write);
void write_text_file_atomic(const std::filesystem::path& path, const std::string& text);
// Creates `dir` if needed and checks that a file can be written in it (a small probe, written, synced, removed):
// throws std::runtime_error("cannot write to DIR: reason") for a read-only, unwritable or full directory.
void check_writable_dir(const std::filesystem::path& dir);

}  // namespace cerebra
