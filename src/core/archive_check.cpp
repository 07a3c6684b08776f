#include "cerebra/core/archive_check.h"

#include <zlib.h>

#include <cctype>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace cerebra {

namespace {

[[noreturn]] void damaged(const std::string& what) { throw std::runtime_error("damaged archive: " + what); }

// Little-endian fields of the zip format, read only after the caller checked the range.
uint64_t le(std::string_view b, uint64_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

bool fits(std::string_view b, uint64_t at, uint64_t len) { return at <= b.size() && len <= b.size() - at; }

constexpr uint32_t kEndRecord = 0x06054b50, kEnd64Locator = 0x07064b50, kEnd64Record = 0x06064b50,
                   kCentralEntry = 0x02014b50, kLocalHeader = 0x04034b50;
constexpr uint64_t kEndSize = 22, kCentralSize = 46, kLocalSize = 30;

struct Directory {
  uint64_t entries = 0, offset = 0, size = 0;
};

Directory find_directory(std::string_view b) {
  if (b.size() < kEndSize) damaged(fmt::format("{} bytes is too short for a zip file", b.size()));
  // The end record closes the file, followed by a comment of at most 65,535 bytes.
  uint64_t end = b.size() - kEndSize;
  const uint64_t lowest = b.size() > kEndSize + 0xffff ? b.size() - kEndSize - 0xffff : 0;
  while (true) {
    if (le(b, end, 4) == kEndRecord && end + kEndSize + le(b, end + 20, 2) == b.size()) break;
    if (end == lowest) damaged("no zip end-of-directory record");
    --end;
  }
  Directory d{le(b, end + 10, 2), le(b, end + 16, 4), le(b, end + 12, 4)};
  if (d.entries == 0xffff || d.offset == 0xffffffff || d.size == 0xffffffff) {  // zip64
    if (end < 20 || le(b, end - 20, 4) != kEnd64Locator) damaged("zip64 end record without its locator");
    const uint64_t at = le(b, end - 12, 8);
    if (!fits(b, at, 56) || le(b, at, 4) != kEnd64Record) damaged("zip64 end record outside the file");
    d = {le(b, at + 32, 8), le(b, at + 48, 8), le(b, at + 40, 8)};
  }
  if (!fits(b, d.offset, d.size)) damaged("the central directory lies outside the file");
  if (d.entries == 0) damaged("no entries");
  if (d.entries > d.size / kCentralSize) damaged(fmt::format("{} entries do not fit the central directory", d.entries));
  return d;
}

// Values of 0xffffffff in an entry are replaced by 8-byte values in its zip64 extra field (id 1), in this order.
void read_zip64_extra(std::string_view b, uint64_t at, uint64_t len, uint64_t& uncompressed, uint64_t& compressed,
                      uint64_t& offset, const std::string& name) {
  std::vector<uint64_t*> wanted;
  for (uint64_t* v : {&uncompressed, &compressed, &offset})
    if (*v == 0xffffffff) wanted.push_back(v);
  if (wanted.empty()) return;
  for (uint64_t p = at; p + 4 <= at + len;) {
    const uint64_t id = le(b, p, 2), size = le(b, p + 2, 2);
    if (p + 4 + size > at + len) break;
    if (id == 1) {
      if (size < 8 * wanted.size()) break;
      for (size_t i = 0; i < wanted.size(); ++i) *wanted[i] = le(b, p + 4 + 8 * i, 8);
      return;
    }
    p += 4 + size;
  }
  damaged(fmt::format("entry '{}' lacks its zip64 sizes", name));
}

std::string inflate_entry(std::string_view data, uint64_t size, const std::string& name) {
  // Deflate expands at most 1032:1; a larger claim is damage, and is refused before anything is allocated.
  if (size > 1032 * data.size() + 64) damaged(fmt::format("entry '{}' claims {} bytes from {}", name, size, data.size()));
  std::string out(size, '\0');
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw std::runtime_error("zlib: inflateInit2 failed");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&z, Z_FINISH);
  const uint64_t produced = z.total_out;
  inflateEnd(&z);
  if (rc != Z_STREAM_END || produced != size) damaged(fmt::format("entry '{}' does not inflate to its size", name));
  return out;
}

// The TorchScript class declarations OutputArchive writes under code/: a header, then one attribute per line.
struct Line {
  std::string_view s;
  size_t p = 0;
  bool eat(std::string_view t) {
    if (s.substr(p, t.size()) != t) return false;
    p += t.size();
    return true;
  }
  bool ident() {
    const size_t start = p;
    while (p < s.size() && (std::isalnum(static_cast<unsigned char>(s[p])) || s[p] == '_')) ++p;
    return p > start && !std::isdigit(static_cast<unsigned char>(s[start]));
  }
  bool quoted() {
    if (!eat("\"")) return false;
    while (p < s.size() && s[p] != '"') {
      const auto c = static_cast<unsigned char>(s[p]);
      if (c < 0x20 || c == 0x7f || c == '\\') return false;
      ++p;
    }
    return eat("\"");
  }
  bool type(int depth = 0) {  // a dotted name, optionally with type arguments: Tensor, Optional[List[int]]
    if (depth > 8 || !ident()) return false;
    while (eat("."))
      if (!ident()) return false;
    if (!eat("[")) return true;
    do {
      if (!type(depth + 1)) return false;
    } while (eat(", "));
    return eat("]");
  }
  bool names() {  // ["a", "b", ]
    if (!eat("[")) return false;
    while (!eat("]"))
      if (!quoted() || !eat(", ")) return false;
    return true;
  }
  bool done() const { return p == s.size(); }
};

bool declaration_line(std::string_view s) {
  Line l{s};
  if (s.empty()) return true;
  if (l.eat("class ")) return l.ident() && l.eat("(") && l.ident() && l.eat("):") && l.done();
  if (!l.eat("  ")) return false;
  if (l.eat("__parameters__ = ") || l.eat("__buffers__ = ")) return l.names() && l.done();
  if (l.eat("__annotations__ = []")) return l.done();
  if (l.eat("__annotations__[")) return l.quoted() && l.eat("] = ") && l.type() && l.done();
  return l.ident() && l.eat(" : ") && l.type() && l.done();
}

void check_declarations(std::string_view text, const std::string& name) {
  size_t line = 1;
  for (size_t p = 0; p < text.size(); ++line) {
    const size_t nl = text.find('\n', p);
    const std::string_view s = text.substr(p, nl == std::string_view::npos ? std::string_view::npos : nl - p);
    if (!declaration_line(s) || (line == 1 && s.substr(0, 6) != "class "))
      damaged(fmt::format("entry '{}' line {} is not a class declaration of a saved module", name, line));
    p = nl == std::string_view::npos ? text.size() : nl + 1;
  }
}

bool ends_with(const std::string& s, std::string_view t) {
  return s.size() >= t.size() && std::string_view(s).substr(s.size() - t.size()) == t;
}

}  // namespace

void check_torch_archive(std::string_view b) {
  const Directory dir = find_directory(b);
  uint64_t at = dir.offset;
  const uint64_t end = dir.offset + dir.size;
  for (uint64_t i = 0; i < dir.entries; ++i) {
    if (!fits(b, at, kCentralSize) || at + kCentralSize > end || le(b, at, 4) != kCentralEntry)
      damaged(fmt::format("central directory entry {} of {} is missing", i + 1, dir.entries));
    const uint64_t flags = le(b, at + 8, 2), method = le(b, at + 10, 2), crc = le(b, at + 16, 4);
    uint64_t compressed = le(b, at + 20, 4), uncompressed = le(b, at + 24, 4);
    const uint64_t name_len = le(b, at + 28, 2), extra_len = le(b, at + 30, 2), comment_len = le(b, at + 32, 2);
    uint64_t local = le(b, at + 42, 4);
    if (at + kCentralSize + name_len + extra_len + comment_len > end)
      damaged(fmt::format("central directory entry {} runs past the directory", i + 1));
    const std::string name(b.substr(at + kCentralSize, name_len));
    for (unsigned char c : name)
      if (c < 0x20 || c >= 0x7f) damaged(fmt::format("entry {} has a name that is not printable text", i + 1));
    read_zip64_extra(b, at + kCentralSize + name_len, extra_len, uncompressed, compressed, local, name);
    if (flags & 1) damaged(fmt::format("entry '{}' is encrypted", name));
    if (method != 0 && method != 8) damaged(fmt::format("entry '{}' uses compression method {}", name, method));
    if (method == 0 && compressed != uncompressed)
      damaged(fmt::format("entry '{}' is stored with two different sizes", name));

    if (!fits(b, local, kLocalSize) || le(b, local, 4) != kLocalHeader)
      damaged(fmt::format("entry '{}' has no local header where the directory puts it", name));
    const uint64_t local_name = le(b, local + 26, 2), local_extra = le(b, local + 28, 2);
    if (!fits(b, local + kLocalSize, local_name) || b.substr(local + kLocalSize, local_name) != name)
      damaged(fmt::format("entry '{}' has another name in its local header", name));
    const uint64_t start = local + kLocalSize + local_name + local_extra;
    if (!fits(b, start, compressed) || start + compressed > dir.offset)
      damaged(fmt::format("entry '{}' ({} bytes) runs past its place in the file", name, compressed));

    const std::string_view raw = b.substr(start, compressed);
    std::string inflated;
    if (method == 8) inflated = inflate_entry(raw, uncompressed, name);
    const std::string_view data = method == 8 ? std::string_view(inflated) : raw;
    uint64_t sum = crc32_z(0L, Z_NULL, 0);
    sum = crc32_z(sum, reinterpret_cast<const Bytef*>(data.data()), data.size());
    if (sum != crc) damaged(fmt::format("entry '{}' fails its CRC-32 check", name));
    if (name.find("/code/") != std::string::npos && ends_with(name, ".py")) check_declarations(data, name);
    at += kCentralSize + name_len + extra_len + comment_len;
  }
}

}  // namespace cerebra
