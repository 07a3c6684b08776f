// Inputs found by the fuzz targets (fuzz/) that once crashed, hung or escaped with an unexpected exception type;
// each must now end in the library's ordinary error with a message.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cerebra/core/config.h"
#include "cerebra/core/state_archive.h"
#include "cerebra/data/task.h"
#include "cerebra/models/pruning.h"
#include "cerebra/train/run.h"
#include "cerebra/train/sampler.h"
#include "cerebra/train/spec.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace cerebra {
namespace {

std::string write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
  return path.string();
}

// A number below double's normal range passed the check, then std::stod threw std::out_of_range on reading it.
TEST(FuzzRegressions, ConfigNumberOutOfRangeIsConfigError) {
  Config c;
  EXPECT_THROW(c.set("lr", "1e-320", "test"), ConfigError);
  EXPECT_THROW(c.set("lambda", "4e-400", "test"), ConfigError);
  EXPECT_THROW(c.set("lr", "1e400", "test"), ConfigError);
  c.set("lr", "2.5e-300", "test");
  EXPECT_DOUBLE_EQ(c.get_float("lr"), 2.5e-300);
}

// A key that is a sequence or a mapping, a `base:` that is not a file name, and a list of lists escaped as
// yaml-cpp's TypedBadConversion without the file.
TEST(FuzzRegressions, ConfigNonScalarKeysAndValuesAreConfigErrors) {
  const auto dir = test::temp_dir("fuzz_yaml");
  for (const char* text : {"? [a, b]\n: 1\n", "{x: 1}: 2\n", "base: [a.yaml]\n", "base: {a: 1}\n",
                           "categorical: [[a, b]]\n", "drop: [{x: 1}]\n"}) {
    Config c;
    const std::string path = write(dir / "c.yaml", text);
    const std::string msg = test::error_of([&] {
      try {
        c.load_yaml_file(path);
      } catch (const ConfigError&) {
        throw;
      } catch (const std::exception& e) {
        throw std::logic_error(std::string("not a ConfigError: ") + e.what());
      }
    });
    EXPECT_NE(msg.find(path), std::string::npos) << text << " -> " << msg;
  }
}

// A config or `base:` naming a device or a directory: /dev/zero was read for ever.
TEST(FuzzRegressions, ConfigThatIsNotARegularFileIsRefused) {
  const auto dir = test::temp_dir("fuzz_base");
  Config c;
  EXPECT_THROW(c.load_yaml_file("/dev/null"), ConfigError);
  EXPECT_THROW(c.load_yaml_file(dir.string()), ConfigError);
  const std::string msg = test::error_of([&] { c.load_yaml_file(write(dir / "c.yaml", "base: /dev/zero\n")); });
  EXPECT_NE(msg.find("/dev/zero: not a regular file"), std::string::npos) << msg;
}

// A `base:` name the file system refuses (longer than NAME_MAX) escaped as std::filesystem::filesystem_error.
TEST(FuzzRegressions, ConfigBaseNameTheSystemRefusesIsConfigError) {
  const auto dir = test::temp_dir("fuzz_long_base");
  Config c;
  const std::string msg =
      test::error_of([&] { c.load_yaml_file(write(dir / "c.yaml", "base: " + std::string(300, 'x') + "\n")); });
  EXPECT_NE(msg.find("cannot open config file"), std::string::npos) << msg;
  EXPECT_NE(test::error_of([&] { c.load_yaml_file((dir / "missing.yaml").string()); }).find("config file not found"),
            std::string::npos);
}

// read_tensors on names that are not a list of strings threw nlohmann::json::type_error.
TEST(FuzzRegressions, CheckpointTensorNamesMustBeAListOfText) {
  const auto dir = test::temp_dir("fuzz_names");
  for (const char* names : {R"({"a": 1})", R"("weights")", R"([1, 2])"}) {
    torch::serialize::OutputArchive ar, sub;
    sub.write("0", torch::zeros({2}), true);
    sub.write("names", c10::IValue(std::string(names)));
    ar.write("best", sub);
    const std::string path = (dir / "t.pt").string();
    ar.save_to(path);
    torch::serialize::InputArchive in;
    in.load_from(path);
    EXPECT_THROW(read_tensors(in, "best"), std::runtime_error) << names;
  }
}

// The pruner's 'original' counts of another type threw nlohmann::json::type_error.
TEST(FuzzRegressions, PrunerStateOfOtherTypesIsRuntimeError) {
  const auto dir = test::temp_dir("fuzz_pruner");
  auto model = test::tiny_copy_model();
  PruneSchedule schedule;
  schedule.start_epoch = 1;
  schedule.target = 0.5;
  for (const char* original : {R"([1])", R"({"heads": "two"})", R"({"heads": 1.5})"}) {
    Pruner pruner(*model, schedule);
    torch::serialize::OutputArchive ar;
    pruner.save(ar);
    write_json(ar, "original", nlohmann::json::parse(original));
    const std::string path = (dir / "p.pt").string();
    ar.save_to(path);
    torch::serialize::InputArchive in;
    in.load_from(path);
    EXPECT_THROW(pruner.load(in), std::runtime_error) << original;
  }
}

// load_model let a checkpoint of other shapes replace the model's tensors (torch's archive sets each tensor to the
// stored one); the model then failed, or read out of bounds, later.
TEST(FuzzRegressions, CheckpointOfOtherShapesIsRefused) {
  const auto dir = test::temp_dir("fuzz_shapes");
  auto small = test::tiny_copy_model("1");
  save_model(*small, (dir / "model.pt").string());
  auto model = test::tiny_copy_model("2");
  const std::string msg = test::error_of([&] { load_model(*model, (dir / "model.pt").string()); });
  EXPECT_NE(msg.find("the model has"), std::string::npos) << msg;
  auto same = test::tiny_copy_model("1");
  load_model(*same, (dir / "model.pt").string());
}

// A string that is not UTF-8 was accepted, then written to the run's config.yaml as replacement characters: the
// config read back differed (and a resume refused it).
TEST(FuzzRegressions, ConfigTextMustBeUtf8) {
  Config c;
  EXPECT_THROW(c.set("data", "caf\xe9.csv", "test"), ConfigError);
  EXPECT_THROW(c.set("layers", "att\xb6" "ention", "test"), ConfigError);
  EXPECT_THROW(c.set("target", "\xed\xa0\x80", "test"), ConfigError);  // a UTF-16 surrogate
  EXPECT_THROW(c.set("target", "\xc0\xaf", "test"), ConfigError);      // an overlong '/'
  c.set("data", "caf\xc3\xa9 \xf0\x9f\x93\x88.csv", "test");
  const auto dir = test::temp_dir("fuzz_utf8");
  Config back;
  back.load_yaml_file(write(dir / "c.yaml", c.to_yaml()));
  EXPECT_TRUE(c.differences(back).empty());
  Config file;
  EXPECT_THROW(file.load_yaml_file(test::source_path("fuzz/corpus/fuzz_config/not_utf8.yaml")), ConfigError);
}

// A resume archive whose sampler vector claims more elements than its storage holds: LibTorch loads it without
// checking, and copying it out read past the buffer (ASan, fuzz_checkpoint). Now a c10::Error naming the entry.
TEST(FuzzRegressions, CheckpointVectorOutsideItsStorageIsRefused) {
  torch::serialize::InputArchive ar;
  ar.load_from(test::source_path("fuzz/corpus/fuzz_checkpoint/sampler_data_outside_storage.bin"));
  SamplerOptions so;
  so.enabled = true;
  Sampler sampler(4, so);
  const std::string msg = test::error_of([&] { sampler.load(ar); });
  EXPECT_NE(msg.find("is damaged: its data lies outside its storage"), std::string::npos) << msg;
}

// A checkpoint whose TorchScript type names are damaged makes torch's reader throw torch::jit::ErrorReport, which
// is no c10::Error and escaped load_model.
TEST(FuzzRegressions, CheckpointTorchCannotParseIsRuntimeError) {
  auto model = test::tiny_copy_model();
  const std::string path = test::source_path("fuzz/corpus/fuzz_checkpoint/torch_type_parse_error.bin");
  const std::string msg = test::error_of([&] {
    try {
      load_model(*model, path);
    } catch (const std::runtime_error&) {
      throw;
    } catch (const std::exception& e) {
      throw std::logic_error(std::string("not a std::runtime_error: ") + e.what());
    }
  });
  EXPECT_EQ(msg.rfind("cannot load checkpoint " + path, 0), 0u) << msg;
}

// A number followed by NUL bytes (or NUL bytes alone) passed as the number before them, then std::stod threw
// std::invalid_argument on "\0...".
TEST(FuzzRegressions, ConfigNumberWithNulBytesIsConfigError) {
  Config c;
  EXPECT_THROW(c.set("lr", std::string("\0\0ay", 4), "test"), ConfigError);
  EXPECT_THROW(c.set("lr", std::string("1e-3\0x", 6), "test"), ConfigError);
  EXPECT_THROW(c.set("epochs", std::string("5\0", 2), "test"), ConfigError);
  EXPECT_THROW(c.set("epochs", std::string("\0", 1), "test"), ConfigError);
}

}  // namespace
}  // namespace cerebra
