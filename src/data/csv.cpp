#include "cerebra/data/csv.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <locale.h>
#include <unordered_map>

namespace cerebra {

CsvError::CsvError(const std::string& path, int64_t line, const std::string& reason)
    : std::runtime_error(path + ":" + std::to_string(line) + ": " + reason),
      path_(path),
      line_(line),
      reason_(reason) {}

namespace {

struct Field {
  std::string text;
  bool quoted = false;
};

std::string trim(const std::string& s, const char* chars) {
  const size_t b = s.find_first_not_of(chars);
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(chars);
  return s.substr(b, e - b + 1);
}

bool equals_ignore_case(const std::string& a, const char* b) {
  const size_t n = std::strlen(b);
  if (a.size() != n) return false;
  for (size_t i = 0; i < n; ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != b[i]) return false;
  }
  return true;
}

bool is_missing_marker(const std::string& text) {
  const std::string t = trim(text, " \t");
  return t.empty() || equals_ignore_case(t, "na") || equals_ignore_case(t, "nan") ||
         equals_ignore_case(t, "null");
}

// "'x'" for printable characters, "'\r'" style escapes or "'\xHH'" otherwise.
std::string describe_char(char c) {
  switch (c) {
    case '\r': return "'\\r'";
    case '\t': return "'\\t'";
    case '"': return "'\"'";
    default: break;
  }
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  char buf[8];
  std::snprintf(buf, sizeof buf, "'\\x%02X'", u);
  return buf;
}

// Splits CSV text into records, tracking physical line numbers.
class RecordReader {
 public:
  RecordReader(const std::string& text, const std::string& path) : s_(text), path_(path) {
    if (s_.compare(0, 3, "\xEF\xBB\xBF") == 0) pos_ = 3;
  }

  // Reads the next record into *fields; returns false at the end of the input.
  // *start_line receives the physical line the record starts on.
  bool next(std::vector<Field>* fields, int64_t* start_line) {
    skip_blank_lines();
    if (pos_ >= s_.size()) return false;
    fields->clear();
    *start_line = line_;
    while (true) {
      fields->push_back(at('"') ? read_quoted() : read_unquoted());
      if (pos_ >= s_.size()) return true;    // end of input ends the record
      if (at(',')) {
        ++pos_;                              // another field follows (possibly empty)
        continue;
      }
      consume_line_break();                  // read_* stop only at ',', a line break or the end
      return true;
    }
  }

 private:
  bool at(char c) const { return pos_ < s_.size() && s_[pos_] == c; }

  // Length of the line break at pos_ (1 for LF, 2 for CRLF), 0 if none.
  size_t line_break_length() const {
    if (at('\n')) return 1;
    if (at('\r') && pos_ + 1 < s_.size() && s_[pos_ + 1] == '\n') return 2;
    return 0;
  }

  void consume_line_break() {
    pos_ += line_break_length();
    ++line_;
  }

  void skip_blank_lines() {
    while (pos_ < s_.size() && line_break_length() > 0) consume_line_break();
  }

  Field read_unquoted() {
    const size_t begin = pos_;
    while (pos_ < s_.size() && !at(',') && line_break_length() == 0) ++pos_;
    return Field{s_.substr(begin, pos_ - begin), false};
  }

  Field read_quoted() {
    const int64_t open_line = line_;
    ++pos_;  // opening quote
    Field f{std::string(), true};
    while (true) {
      if (pos_ >= s_.size()) {
        throw CsvError(path_, open_line,
                       "unterminated quoted field (the quote opened on this line is never closed)");
      }
      const char c = s_[pos_];
      if (c == '"') {
        if (pos_ + 1 < s_.size() && s_[pos_ + 1] == '"') {  // "" is one literal quote
          f.text += '"';
          pos_ += 2;
          continue;
        }
        ++pos_;  // closing quote
        break;
      }
      if (c == '\n') ++line_;
      f.text += c;
      ++pos_;
    }
    if (pos_ < s_.size() && !at(',') && line_break_length() == 0) {
      throw CsvError(path_, line_,
                     "unexpected character " + describe_char(s_[pos_]) + " after closing quote");
    }
    return f;
  }

  const std::string& s_;
  const std::string& path_;
  size_t pos_ = 0;
  int64_t line_ = 1;
};

}  // namespace

int64_t CsvTable::column_index(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return static_cast<int64_t>(i);
  }
  std::string available;
  for (size_t i = 0; i < header.size(); ++i) {
    available += (i ? ", " : "") + header[i];
  }
  throw CsvError(path, 0, "no column named '" + name + "'; available columns: " + available);
}

CsvTable parse_csv(const std::string& text, const std::string& path) {
  CsvTable table;
  table.path = path;
  RecordReader reader(text, path);
  std::vector<Field> fields;
  int64_t line = 0;

  if (!reader.next(&fields, &line)) {
    throw CsvError(path, 0, "empty file: a header row is required");
  }
  std::unordered_map<std::string, size_t> seen;
  for (const Field& f : fields) {
    std::string name = trim(f.text, " \t\r\n");
    auto [it, inserted] = seen.emplace(name, table.header.size());
    if (!inserted) {
      throw CsvError(path, line,
                     "duplicate column name '" + name + "' in the header (columns " +
                         std::to_string(it->second + 1) + " and " +
                         std::to_string(table.header.size() + 1) + ")");
    }
    table.header.push_back(std::move(name));
  }

  const size_t width = table.header.size();
  while (reader.next(&fields, &line)) {
    if (fields.size() != width) {
      throw CsvError(path, line,
                     "expected " + std::to_string(width) + " fields (as in the header), found " +
                         std::to_string(fields.size()));
    }
    std::vector<CsvCell> row;
    row.reserve(width);
    for (Field& f : fields) {
      const bool missing = !f.quoted && is_missing_marker(f.text);
      row.push_back(CsvCell{std::move(f.text), missing});
    }
    table.rows.push_back(std::move(row));
    table.line_numbers.push_back(line);
  }
  return table;
}

CsvTable read_csv(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw CsvError(path, 0, std::string("cannot open file: ") + std::strerror(errno));
  }
  std::string text;
  char buf[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, file)) > 0) text.append(buf, n);
  const bool failed = std::ferror(file) != 0;
  const int err = errno;
  std::fclose(file);
  if (failed) {
    throw CsvError(path, 0, std::string("cannot read file: ") + std::strerror(err));
  }
  return parse_csv(text, path);
}

bool parse_double(const std::string& s, double* out) {
  const std::string t = trim(s, " \t");
  if (t.empty() || std::isspace(static_cast<unsigned char>(t[0]))) return false;  // strtod would skip "\n"
  // strtod also reads hexadecimal numbers; data files mean those as text (ids, hashes).
  const size_t sign = (t[0] == '+' || t[0] == '-') ? 1 : 0;
  if (t.size() > sign + 1 && t[sign] == '0' && (t[sign + 1] == 'x' || t[sign + 1] == 'X')) {
    return false;
  }
  // The "C" locale keeps '.' the decimal point even if the process called setlocale().
  static const locale_t c_locale = newlocale(LC_ALL_MASK, "C", static_cast<locale_t>(nullptr));
  char* end = nullptr;
  const double v = c_locale ? strtod_l(t.c_str(), &end, c_locale) : std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size() || !std::isfinite(v)) return false;
  if (out != nullptr) *out = v;
  return true;
}

ColumnKind infer_column_kind(const CsvTable& t, int64_t col) {
  if (col < 0 || col >= static_cast<int64_t>(t.header.size())) {
    throw CsvError(t.path, 0,
                   "column index " + std::to_string(col) + " out of range (the table has " +
                       std::to_string(t.header.size()) + " columns)");
  }
  bool any_value = false;
  for (const auto& row : t.rows) {
    const CsvCell& cell = row[static_cast<size_t>(col)];
    if (cell.missing) continue;
    if (!parse_double(cell.text, nullptr)) return ColumnKind::Categorical;
    any_value = true;
  }
  return any_value ? ColumnKind::Numeric : ColumnKind::Categorical;
}

}  // namespace cerebra
