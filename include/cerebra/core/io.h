// Small file helpers shared by runs, sweeps, reports and exports. Errors name the file.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace cerebra {

// The whole file as text; throws std::runtime_error("cannot read PATH") when it cannot be opened.
std::string read_text_file(const std::filesystem::path& path);
// Parsed JSON; throws "PATH: invalid JSON: ..." on a parse error.
nlohmann::json read_json_file(const std::filesystem::path& path);
// Writes `text` to `path` (replacing it); throws "cannot write PATH".
void write_text_file(const std::filesystem::path& path, const std::string& text);
// Writes to PATH.tmp, then renames: a reader never sees a partly written file.
void write_text_file_atomic(const std::filesystem::path& path, const std::string& text);

}  // namespace cerebra
