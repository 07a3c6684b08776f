// libFuzzer target: the CSV reader on arbitrary bytes. A parse either succeeds with a well-formed table or throws
// CsvError; column inference and number parsing run on every parsed table. Invariants violated -> abort.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cerebra/data/csv.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const cerebra::CsvTable t = cerebra::parse_csv(text, "fuzz.csv");
    if (t.header.empty() || t.line_numbers.size() != t.rows.size()) std::abort();
    int64_t last_line = 0;
    for (size_t r = 0; r < t.rows.size(); ++r) {
      if (t.rows[r].size() != t.header.size() || t.line_numbers[r] <= last_line) std::abort();
      last_line = t.line_numbers[r];
      for (const auto& cell : t.rows[r]) {
        double v = 0;
        if (cerebra::parse_double(cell.text, &v) && !std::isfinite(v)) std::abort();
      }
    }
    for (size_t c = 0; c < t.header.size(); ++c) {
      if (t.column_index(t.header[c]) != static_cast<int64_t>(c)) std::abort();  // names are unique
      cerebra::infer_column_kind(t, static_cast<int64_t>(c));
    }
    const std::string absent = t.header[0] + "\x01";  // a name no column has
    bool named = false;
    for (const auto& h : t.header) named = named || h == absent;
    if (!named) {
      try {
        t.column_index(absent);
        std::abort();
      } catch (const cerebra::CsvError&) {
      }
    }
  } catch (const cerebra::CsvError&) {
  }
  return 0;
}
