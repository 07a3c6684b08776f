// The integrity check before LibTorch reads an archive (include/cerebra/core/archive_check.h): archives the library
// writes pass it; damage of any byte that matters is refused with a message, never loaded as other numbers; the
// inputs that crashed LibTorch's reader end as errors.
#include <gtest/gtest.h>

#include <zlib.h>

#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cerebra/core/archive_check.h"
#include "cerebra/core/io.h"
#include "cerebra/core/state_archive.h"
#include "cerebra/models/models.h"
#include "cerebra/train/train.h"
#include "test_helpers.h"

namespace cerebra {
namespace {

std::shared_ptr<Model> tiny_model(uint64_t seed) {
  torch::manual_seed(seed);
  return test::tiny_copy_model();
}

std::string model_bytes(const Model& model) {
  torch::serialize::OutputArchive ar;
  model.save(ar);
  std::ostringstream out;
  ar.save_to(out);
  return out.str();
}

bool same_weights(Model& a, Model& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  if (pa.size() != pb.size()) return false;
  for (const auto& p : pa)
    if (!pb.contains(p.key()) || !torch::equal(p.value(), pb[p.key()])) return false;
  return true;
}

uint32_t le32(const std::string& b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

void put32(std::string& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

std::string error_of_check(const std::string& bytes) {
  return test::error_of([&] { check_torch_archive(bytes); });
}

TEST(ArchiveCheck, ArchivesTheLibraryWritesPass) {
  auto model = tiny_model(1);
  check_torch_archive(model_bytes(*model));
  // A resume-style archive: scalars, vectors, JSON text, named tensors and nested archives.
  torch::serialize::OutputArchive ar, sub;
  write_int(ar, "format", 1);
  write_double(ar, "best_val_loss", 0.25);
  write_ints(ar, "perm", {2, 0, 1});
  write_json(ar, "last_step", nlohmann::json{{"step", 3}});
  write_tensors(ar, "best", {{"a.b", torch::ones({2, 3})}, {"0", torch::zeros({4})}});
  model->save(sub);
  ar.write("model", sub);
  std::ostringstream out;
  ar.save_to(out);
  check_torch_archive(out.str());
  torch::serialize::InputArchive in;
  load_archive_bytes(in, out.str());
  EXPECT_EQ(read_ints(in, "perm"), (std::vector<int64_t>{2, 0, 1}));
}

// Without the check a flipped byte inside a weight's data loads as another number: the CRC-32 must catch it.
TEST(ArchiveCheck, EveryDamagedByteIsRefusedOrChangesNothing) {
  auto original = tiny_model(1);
  const std::string bytes = model_bytes(*original);
  std::mt19937_64 rng(7);
  int refused = 0, loaded = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string damaged = bytes;
    const size_t at = rng() % damaged.size();
    damaged[at] = static_cast<char>(damaged[at] ^ (1 + rng() % 255));
    auto model = tiny_model(2);
    torch::serialize::InputArchive ar;
    try {
      load_archive_bytes(ar, damaged);
      model->load(ar);
    } catch (const std::runtime_error& e) {
      ++refused;
      continue;
    } catch (const c10::Error&) {  // LibTorch's reader on an intact zip whose fields it reads differently
      ++refused;
      continue;
    }
    ++loaded;  // a byte no reader uses (a time stamp, attributes): the weights are the original's
    EXPECT_TRUE(same_weights(*model, *original)) << "byte " << at << " changed the weights and passed the check";
  }
  EXPECT_GT(refused, 200);
  EXPECT_GT(loaded, 0);
}

TEST(ArchiveCheck, TruncatedAndEmptyFilesAreRefused) {
  const std::string bytes = model_bytes(*tiny_model(1));
  for (size_t keep : {size_t{0}, size_t{10}, bytes.size() / 2, bytes.size() - 1}) {
    const std::string msg = error_of_check(bytes.substr(0, keep));
    EXPECT_EQ(msg.rfind("damaged archive: ", 0), 0u) << keep << ": " << msg;
  }
}

// The zip's size fields are refused before anything is allocated from them.
TEST(ArchiveCheck, SizeFieldsBeyondTheFileAreRefused) {
  const std::string bytes = model_bytes(*tiny_model(1));
  const size_t dir = bytes.rfind(std::string("PK\x01\x02", 4));
  ASSERT_NE(dir, std::string::npos);
  std::string big = bytes;
  put32(big, dir + 20, 0xfffffff0u);  // compressed size
  put32(big, dir + 24, 0xfffffff0u);  // uncompressed size
  EXPECT_NE(error_of_check(big).find("runs past its place in the file"), std::string::npos) << error_of_check(big);
}

// An entry whose text is changed and whose CRC-32 is made to match still meets the declaration check: the code
// files may hold only the lines OutputArchive writes, not statements for LibTorch's TorchScript parser.
TEST(ArchiveCheck, CodeThatIsNoModuleDeclarationIsRefused) {
  std::string bytes = model_bytes(*tiny_model(1));
  const std::string line = "  weight : Tensor";
  const std::string other = "  weight : X=1+2";  // same length, so every offset stays
  size_t at = std::string::npos;
  size_t dir = 0, local = 0;
  // The first stored (uncompressed) code entry that has the line.
  for (size_t p = bytes.find(std::string("PK\x01\x02", 4)); p != std::string::npos;
       p = bytes.find(std::string("PK\x01\x02", 4), p + 4)) {
    const size_t name_len = static_cast<unsigned char>(bytes[p + 28]) | static_cast<unsigned char>(bytes[p + 29]) << 8;
    const std::string name = bytes.substr(p + 46, name_len);
    if (bytes[p + 10] != 0 || name.find("/code/") == std::string::npos || name.rfind(".py") != name.size() - 3)
      continue;
    const size_t l = le32(bytes, p + 42);
    const size_t start = l + 30 + (static_cast<unsigned char>(bytes[l + 26]) | static_cast<unsigned char>(bytes[l + 27]) << 8) +
                         (static_cast<unsigned char>(bytes[l + 28]) | static_cast<unsigned char>(bytes[l + 29]) << 8);
    const size_t found = bytes.find(line, start);
    if (found != std::string::npos && found < start + le32(bytes, p + 20)) {
      at = found, dir = p, local = l;
      bytes.replace(at, other.size(), other);
      const uint32_t crc = static_cast<uint32_t>(
          crc32(0, reinterpret_cast<const Bytef*>(bytes.data() + start), static_cast<uInt>(le32(bytes, p + 20))));
      put32(bytes, dir + 16, crc);
      put32(bytes, local + 14, crc);
      break;
    }
  }
  ASSERT_NE(at, std::string::npos);
  const std::string msg = error_of_check(bytes);
  EXPECT_NE(msg.find("is not a class declaration of a saved module"), std::string::npos) << msg;
}

// Inputs on which LibTorch's reader crashed (a SEGV in its TorchScript type parser) or allocated gigabytes for a
// damaged pickle: each is now refused by the check with a message.
TEST(ArchiveCheck, InputsThatCrashedLibTorchAreRefused) {
  for (const char* f : {"fuzz/libtorch_crashes/checkpoint_parseClassConstant_segv.bin",
                        "fuzz/libtorch_crashes/run_dir_parseClassConstant_segv.bin",
                        "fuzz/libtorch_crashes/checkpoint_unpickler_readBytes_4gib.bin"}) {
    std::string bytes = read_text_file(test::source_path(f));
    // The run-directory input holds model.pt after a marker line.
    const size_t marker = bytes.find("@@ model.pt\n");
    if (marker != std::string::npos) bytes = bytes.substr(marker + 12);
    const std::string msg = error_of_check(bytes);
    EXPECT_EQ(msg.rfind("damaged archive: ", 0), 0u) << f << ": " << msg;
    auto model = tiny_model(1);
    const std::string path = (test::temp_dir("archive_check") / "model.pt").string();
    write_text_file(path, bytes);
    const std::string load = test::error_of([&] { load_model(*model, path); });
    EXPECT_EQ(load.rfind("cannot load checkpoint " + path + ": damaged archive: ", 0), 0u) << load;
  }
}

}  // namespace
}  // namespace cerebra
