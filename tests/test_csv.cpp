#include "cerebra/data/csv.h"
#include "test_helpers.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

using cerebra::ColumnKind;
using cerebra::CsvError;
using cerebra::CsvTable;
using cerebra::infer_column_kind;
using cerebra::parse_csv;
using cerebra::parse_double;
using cerebra::read_csv;

namespace {

// Runs `fn`, which must throw CsvError, and returns the error.
template <typename Fn>
CsvError expect_csv_error(Fn fn) {
  try {
    fn();
  } catch (const CsvError& e) {
    return e;
  }
  ADD_FAILURE() << "expected a CsvError";
  return CsvError("", -1, "");
}

std::string contents_of(const CsvTable& t, size_t row, size_t col) { return t.rows.at(row).at(col).text; }

}  // namespace

TEST(Csv, ErrorMessageFormat) {
  const CsvError e("data/x.csv", 12, "something is wrong");
  EXPECT_STREQ(e.what(), "data/x.csv:12: something is wrong");
  EXPECT_EQ(e.path(), "data/x.csv");
  EXPECT_EQ(e.line(), 12);
  EXPECT_EQ(e.reason(), "something is wrong");
}

TEST(Csv, QuotedCommas) {
  const CsvTable t = parse_csv("name,n\n\"Smith, John\",2\n\"a,b,c\",3\n");
  ASSERT_EQ(t.header.size(), 2u);
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(contents_of(t, 0, 0), "Smith, John");
  EXPECT_EQ(contents_of(t, 0, 1), "2");
  EXPECT_EQ(contents_of(t, 1, 0), "a,b,c");
  EXPECT_EQ(t.path, "<string>");
}

TEST(Csv, EscapedQuotes) {
  const CsvTable t = parse_csv("q,n\n\"say \"\"hi\"\"\",1\n\"\"\"\"\"\",2\n");
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(contents_of(t, 0, 0), "say \"hi\"");
  EXPECT_EQ(contents_of(t, 1, 0), "\"\"");
}

TEST(Csv, NewlineInsideQuotesKeepsLineNumbers) {
  const CsvTable t = parse_csv("id,text\n1,\"first line\nsecond line\n\nfourth\"\n2,plain\n3,\"x\"\n");
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(contents_of(t, 0, 1), "first line\nsecond line\n\nfourth");
  EXPECT_EQ(contents_of(t, 1, 1), "plain");
  EXPECT_EQ(t.line_numbers, (std::vector<int64_t>{2, 6, 7}));
}

TEST(Csv, CrlfLineEndings) {
  const CsvTable t = parse_csv("a,b\r\n1,2\r\n\"x\r\ny\",4\r\n5,6");
  ASSERT_EQ(t.header, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(contents_of(t, 0, 1), "2");
  EXPECT_EQ(contents_of(t, 1, 0), "x\r\ny");  // kept verbatim inside quotes
  EXPECT_EQ(contents_of(t, 2, 1), "6");       // no final newline
  EXPECT_EQ(t.line_numbers, (std::vector<int64_t>{2, 3, 5}));
}

TEST(Csv, ByteOrderMarkSkipped) {
  const CsvTable t = parse_csv("\xEF\xBB\xBFwage,region\n1.5,south");
  ASSERT_EQ(t.header.size(), 2u);
  EXPECT_EQ(t.header[0], "wage");
  EXPECT_EQ(t.column_index("wage"), 0);
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.line_numbers[0], 2);
  // A BOM elsewhere is data, not skipped.
  EXPECT_EQ(contents_of(parse_csv("a\n\xEF\xBB\xBFx\n"), 0, 0), "\xEF\xBB\xBFx");
}

TEST(Csv, BlankLinesSkippedAndCounted) {
  const CsvTable t = parse_csv("\na,b\n\n1,2\r\n\r\n\n3,4\n\n");
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.line_numbers, (std::vector<int64_t>{4, 7}));
  EXPECT_EQ(contents_of(t, 1, 0), "3");
}

TEST(Csv, HeaderNamesTrimmedFieldsVerbatim) {
  const CsvTable t = parse_csv(" a ,\" b \", c\t\n x , y ,z\n");
  EXPECT_EQ(t.header, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(contents_of(t, 0, 0), " x ");
  EXPECT_EQ(contents_of(t, 0, 1), " y ");
}

TEST(Csv, MissingVersusQuotedEmpty) {
  const CsvTable t = parse_csv("a,b,c,d\n,\"\",x,\n\"\",,\" \", \n");
  ASSERT_EQ(t.rows.size(), 2u);
  const auto& r0 = t.rows[0];
  ASSERT_EQ(r0.size(), 4u);
  EXPECT_TRUE(r0[0].missing);
  EXPECT_FALSE(r0[1].missing);
  EXPECT_EQ(r0[1].text, "");
  EXPECT_FALSE(r0[2].missing);
  EXPECT_TRUE(r0[3].missing);  // empty field after a trailing comma
  const auto& r1 = t.rows[1];
  EXPECT_FALSE(r1[0].missing);
  EXPECT_TRUE(r1[1].missing);
  EXPECT_FALSE(r1[2].missing);  // quoted blank
  EXPECT_TRUE(r1[3].missing);   // unquoted blank
}

TEST(Csv, NaMarkers) {
  const CsvTable t = parse_csv("v\nNA\nna\nNaN\nnan\nnull\nNULL\n NA \n\"NA\"\n\"null\"\nN/A\nNAB\n0\n");
  ASSERT_EQ(t.rows.size(), 12u);
  std::vector<bool> missing;
  for (const auto& row : t.rows) missing.push_back(row[0].missing);
  EXPECT_EQ(missing, (std::vector<bool>{true, true, true, true, true, true, true, false, false, false,
                                        false, false}));
  EXPECT_EQ(t.rows[7][0].text, "NA");
  EXPECT_EQ(t.rows[0][0].text, "NA");  // text stays available
}

TEST(Csv, ParseDouble) {
  double v = 0;
  EXPECT_TRUE(parse_double("1e3", &v));
  EXPECT_DOUBLE_EQ(v, 1000.0);
  EXPECT_TRUE(parse_double(" 2.5 ", &v));
  EXPECT_DOUBLE_EQ(v, 2.5);
  EXPECT_TRUE(parse_double("\t-0.25", &v));
  EXPECT_DOUBLE_EQ(v, -0.25);
  EXPECT_TRUE(parse_double("+3", &v));
  EXPECT_DOUBLE_EQ(v, 3.0);
  EXPECT_TRUE(parse_double(".5", &v));
  EXPECT_DOUBLE_EQ(v, 0.5);
  EXPECT_TRUE(parse_double("1e+05", &v));
  EXPECT_DOUBLE_EQ(v, 100000.0);
  EXPECT_TRUE(parse_double("354.94", nullptr));

  v = 42;
  for (const char* bad : {"1,5", "inf", "-Infinity", "nan", "NaN", "1e400", "0x10", "-0X1p3", "", "  ",
                          "abc", "12abc", "1 2", "1.2.3", "e5", "\n5"}) {
    EXPECT_FALSE(parse_double(bad, &v)) << "'" << bad << "'";
  }
  EXPECT_EQ(v, 42);  // untouched on failure
}

TEST(Csv, InferColumnKind) {
  const CsvTable t = parse_csv(
      "num,comma,missing,inf,nan,text,quotednum\n"
      "1e3,1,NA,1,1,a,\"7\"\n"
      " 2.5 ,\"1,5\",,inf,nan,b,\"8.5\"\n"
      "NA,3,null,2,2,3,\"-1\"\n");
  EXPECT_EQ(infer_column_kind(t, 0), ColumnKind::Numeric);
  EXPECT_EQ(infer_column_kind(t, 1), ColumnKind::Categorical);  // "1,5" is not a number
  EXPECT_EQ(infer_column_kind(t, 2), ColumnKind::Categorical);  // all missing
  EXPECT_EQ(infer_column_kind(t, 3), ColumnKind::Categorical);  // inf is not finite
  EXPECT_EQ(infer_column_kind(t, 4), ColumnKind::Numeric);      // unquoted nan is missing
  EXPECT_EQ(infer_column_kind(t, 5), ColumnKind::Categorical);
  EXPECT_EQ(infer_column_kind(t, 6), ColumnKind::Numeric);      // quoting does not make text
  EXPECT_EQ(infer_column_kind(parse_csv("a,b\n"), 0), ColumnKind::Categorical);  // no rows
  EXPECT_THROW(infer_column_kind(t, 7), CsvError);
  EXPECT_THROW(infer_column_kind(t, -1), CsvError);
}

TEST(Csv, WrongFieldCountNamesFileAndLine) {
  const std::string text =
      "a,b,c,d,e,f,g\n"
      "1,2,3,4,5,6,7\n"
      "1,2,3,4,5,6,7,8\n";
  const CsvError e = expect_csv_error([&] { parse_csv(text, "wages.csv"); });
  EXPECT_EQ(std::string(e.what()), "wages.csv:3: expected 7 fields (as in the header), found 8");
  EXPECT_EQ(e.path(), "wages.csv");
  EXPECT_EQ(e.line(), 3);

  // Too few, after a multi-line quoted field and a blank line.
  const CsvError few = expect_csv_error([] { parse_csv("a,b,c\n\"x\ny\",2,3\n\n1,2\n", "f.csv"); });
  EXPECT_EQ(std::string(few.what()), "f.csv:5: expected 3 fields (as in the header), found 2");
}

TEST(Csv, UnterminatedQuoteNamesOpeningLine) {
  const CsvError e = expect_csv_error([] { parse_csv("a,b\n1,2\n3,\"open\nmore\n\n4,5\n", "u.csv"); });
  EXPECT_EQ(e.line(), 3);
  EXPECT_NE(e.reason().find("unterminated"), std::string::npos) << e.what();
  EXPECT_EQ(std::string(e.what()).rfind("u.csv:3: ", 0), 0u) << e.what();
}

TEST(Csv, JunkAfterClosingQuote) {
  const CsvError e = expect_csv_error([] { parse_csv("a,b\n1,2\n\"ab\"x,3\n", "j.csv"); });
  EXPECT_EQ(std::string(e.what()), "j.csv:3: unexpected character 'x' after closing quote");
  const CsvError space = expect_csv_error([] { parse_csv("a,b\n\"ab\" ,3\n"); });
  EXPECT_EQ(space.reason(), "unexpected character ' ' after closing quote");
  EXPECT_EQ(space.line(), 2);
}

TEST(Csv, DuplicateHeaderIsError) {
  const CsvError e = expect_csv_error([] { parse_csv("\nwage,region, wage\n1,a,2\n", "d.csv"); });
  EXPECT_EQ(e.line(), 2);
  EXPECT_NE(e.reason().find("duplicate column name 'wage'"), std::string::npos) << e.what();
}

TEST(Csv, EmptyFileIsError) {
  for (const std::string text : {"", "\n\n", "\xEF\xBB\xBF", "\r\n"}) {
    const CsvError e = expect_csv_error([&] { parse_csv(text, "empty.csv"); });
    EXPECT_EQ(e.path(), "empty.csv");
    EXPECT_NE(std::string(e.what()).find("empty.csv"), std::string::npos);
    EXPECT_NE(e.reason().find("empty"), std::string::npos) << e.what();
  }
  // A header alone is a valid table with no rows.
  const CsvTable t = parse_csv("a,b");
  EXPECT_EQ(t.header.size(), 2u);
  EXPECT_TRUE(t.rows.empty());
}

TEST(Csv, ReadCsvNonexistentPath) {
  const std::string path = "/nonexistent-dir/missing.csv";
  const CsvError e = expect_csv_error([&] { read_csv(path); });
  EXPECT_EQ(e.path(), path);
  EXPECT_EQ(e.line(), 0);
  EXPECT_NE(e.reason().find("cannot open file"), std::string::npos) << e.what();
}

TEST(Csv, ReadCsvFromDisk) {
  const auto path = std::filesystem::path(::testing::TempDir()) / "cerebra_test_csv_disk.csv";
  {
    std::ofstream out(path, std::ios::binary);
    out << "\xEF\xBB\xBFx,y\r\n1,\"a\r\nb\"\r\n2,c\r\n";
  }
  const CsvTable t = read_csv(path.string());
  std::filesystem::remove(path);
  EXPECT_EQ(t.path, path.string());
  EXPECT_EQ(t.header, (std::vector<std::string>{"x", "y"}));
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.line_numbers, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(contents_of(t, 1, 1), "c");
}

TEST(Csv, ColumnIndexErrorListsColumns) {
  const CsvTable t = parse_csv("wage,education,region\n1,2,a\n", "cps.csv");
  EXPECT_EQ(t.column_index("region"), 2);
  const CsvError e = expect_csv_error([&] { t.column_index("salary"); });
  const std::string msg = e.what();
  EXPECT_EQ(e.path(), "cps.csv");
  EXPECT_NE(msg.find("cps.csv"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'salary'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("wage, education, region"), std::string::npos) << msg;
}

TEST(Csv, Cps1988Fixture) {
  const CsvTable t = read_csv(cerebra::test::source_path("data/fixtures/cps1988_small.csv"));
  EXPECT_EQ(t.header, (std::vector<std::string>{"wage", "education", "experience", "ethnicity", "smsa",
                                                "region", "parttime"}));
  ASSERT_EQ(t.rows.size(), 600u);
  EXPECT_EQ(t.line_numbers.front(), 2);
  EXPECT_EQ(t.line_numbers.back(), 601);
  EXPECT_EQ(contents_of(t, 0, 0), "204.18");  // first sampled row of CPS1988
  EXPECT_EQ(contents_of(t, 0, 5), "northeast");
  const int64_t wage = t.column_index("wage");
  const int64_t region = t.column_index("region");
  EXPECT_EQ(infer_column_kind(t, wage), ColumnKind::Numeric);
  EXPECT_EQ(infer_column_kind(t, t.column_index("education")), ColumnKind::Numeric);
  EXPECT_EQ(infer_column_kind(t, t.column_index("experience")), ColumnKind::Numeric);
  EXPECT_EQ(infer_column_kind(t, region), ColumnKind::Categorical);
  EXPECT_EQ(infer_column_kind(t, t.column_index("ethnicity")), ColumnKind::Categorical);

  std::set<std::string> regions;
  for (const auto& row : t.rows) {
    ASSERT_EQ(row.size(), 7u);
    double w = 0;
    ASSERT_TRUE(parse_double(row[static_cast<size_t>(wage)].text, &w));
    EXPECT_GT(w, 0.0);
    regions.insert(row[static_cast<size_t>(region)].text);
  }
  EXPECT_EQ(regions, (std::set<std::string>{"midwest", "northeast", "south", "west"}));
}
