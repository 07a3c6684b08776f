// CSV reading for real data files: RFC 4180 (quoted fields with "" escapes, separators and
// line breaks inside quotes) plus what exported files do in practice (CRLF or LF, UTF-8 BOM,
// blank lines, NA markers). Errors name the file and the physical line.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace cerebra {

// One field. `missing` is true for an unquoted field whose text, trimmed of spaces and tabs,
// is empty or one of NA / NaN / null (any letter case). A quoted field is never missing:
// "" is an empty string and "NA" is the two letters.
struct CsvCell {
  std::string text;  // verbatim field text (quotes removed and "" unescaped for quoted fields)
  bool missing = false;
};

class CsvError : public std::runtime_error {
 public:
  // what() is "<path>:<line>: <reason>"; line is 0 when the error is not about one line.
  CsvError(const std::string& path, int64_t line, const std::string& reason);
  const std::string& path() const { return path_; }
  int64_t line() const { return line_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string path_;
  int64_t line_;
  std::string reason_;
};

struct CsvTable {
  std::string path;                        // file the table came from ("<string>" when parsed from memory)
  std::vector<std::string> header;         // column names, trimmed of surrounding whitespace
  std::vector<std::vector<CsvCell>> rows;  // every row has header.size() cells
  std::vector<int64_t> line_numbers;       // 1-based physical line where each row starts

  // Index of the column named `name`; throws CsvError naming the file, the column and
  // the available columns.
  int64_t column_index(const std::string& name) const;
};

// Reads and parses a file. Throws CsvError ("cannot open file", parse errors).
CsvTable read_csv(const std::string& path);

// Parses CSV text held in memory; `path` is only used in errors and CsvTable::path.
//  - the first record is the header (required; an empty input is an error); duplicate names are an error
//  - comma separator; LF or CRLF line endings; a final newline is optional
//  - a UTF-8 byte order mark at the start is skipped
//  - completely empty physical lines outside quotes are skipped
//  - quoted fields may hold commas, "" (one quote) and line breaks (kept verbatim)
//  - after a closing quote only a comma, a line break or the end of input may follow
//  - every record must have as many fields as the header
CsvTable parse_csv(const std::string& text, const std::string& path = "<string>");

enum class ColumnKind { Numeric, Categorical };

// Numeric iff every non-missing cell of column `col` passes parse_double; a column whose
// cells are all missing (or a table with no rows) is Categorical. Throws CsvError if `col`
// is out of range.
ColumnKind infer_column_kind(const CsvTable& t, int64_t col);

// True iff `s`, with surrounding spaces and tabs allowed, is a complete decimal number
// (strtod syntax in the "C" locale, whatever the process locale) whose value is finite.
// "inf", "nan" and hexadecimal ("0x1p3") are rejected. On success stores the value in *out
// (out may be null).
bool parse_double(const std::string& s, double* out);

}  // namespace cerebra
