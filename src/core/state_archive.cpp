#include "cerebra/core/state_archive.h"

#include "cerebra/core/archive_check.h"
#include "cerebra/core/io.h"

#include <torch/torch.h>

#include <stdexcept>

#include <nlohmann/json.hpp>

namespace cerebra {

namespace {

template <typename T>
torch::Tensor to_tensor(const std::vector<T>& v, torch::ScalarType type) {
  return torch::from_blob(const_cast<T*>(v.data()), {static_cast<int64_t>(v.size())}, type).clone();
}

// A damaged archive can give a tensor sizes, strides or an offset that reach past its storage (LibTorch does not
// check them on load); reading such a tensor would read past the buffer.
void check_in_storage(const torch::Tensor& t, const std::string& key) {
  if (t.numel() == 0) return;
  __int128 last = t.storage_offset();
  bool ok = t.storage_offset() >= 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    ok = ok && t.stride(d) >= 0;
    last += static_cast<__int128>(t.size(d) - 1) * t.stride(d);
  }
  ok = ok && (last + 1) * t.element_size() <= static_cast<__int128>(t.storage().nbytes());
  TORCH_CHECK(ok, "checkpoint entry '", key, "' is damaged: its data lies outside its storage");
}

torch::Tensor read_tensor(torch::serialize::InputArchive& ar, const std::string& key, torch::ScalarType type) {
  torch::Tensor t;
  ar.read(key, t, /*is_buffer=*/true);
  check_in_storage(t, key);
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == type, "checkpoint entry '", key, "' is ", t.scalar_type(), " ",
              t.sizes(), ", expected a vector of ", type);
  return t.contiguous();
}

template <typename T>
std::vector<T> from_tensor(const torch::Tensor& t) {
  return std::vector<T>(t.data_ptr<T>(), t.data_ptr<T>() + t.numel());
}

}  // namespace

void load_archive_bytes(torch::serialize::InputArchive& ar, const std::string& bytes) {
  try {
    check_torch_archive(bytes);
    ar.load_from(bytes.data(), bytes.size());
  } catch (const c10::Error& e) {
    throw std::runtime_error(e.what_without_backtrace());
  } catch (const std::runtime_error&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error(e.what());
  }
}

void load_archive(torch::serialize::InputArchive& ar, const std::string& path) {
  load_archive_bytes(ar, read_text_file(path));
}

void write_int(torch::serialize::OutputArchive& ar, const std::string& key, int64_t v) { ar.write(key, c10::IValue(v)); }

int64_t read_int(torch::serialize::InputArchive& ar, const std::string& key) {
  c10::IValue v;
  ar.read(key, v);
  TORCH_CHECK(v.isInt(), "checkpoint entry '", key, "' is not an integer");
  return v.toInt();
}

void write_double(torch::serialize::OutputArchive& ar, const std::string& key, double v) {
  ar.write(key, c10::IValue(v));
}

double read_double(torch::serialize::InputArchive& ar, const std::string& key) {
  c10::IValue v;
  ar.read(key, v);
  TORCH_CHECK(v.isDouble(), "checkpoint entry '", key, "' is not a number");
  return v.toDouble();
}

void write_doubles(torch::serialize::OutputArchive& ar, const std::string& key, const std::vector<double>& v) {
  ar.write(key, to_tensor(v, torch::kFloat64), /*is_buffer=*/true);
}

std::vector<double> read_doubles(torch::serialize::InputArchive& ar, const std::string& key) {
  return from_tensor<double>(read_tensor(ar, key, torch::kFloat64));
}

void write_ints(torch::serialize::OutputArchive& ar, const std::string& key, const std::vector<int64_t>& v) {
  ar.write(key, to_tensor(v, torch::kInt64), /*is_buffer=*/true);
}

std::vector<int64_t> read_ints(torch::serialize::InputArchive& ar, const std::string& key) {
  return from_tensor<int64_t>(read_tensor(ar, key, torch::kInt64));
}

void write_flags(torch::serialize::OutputArchive& ar, const std::string& key, const std::vector<char>& v) {
  std::vector<uint8_t> bytes(v.begin(), v.end());
  ar.write(key, to_tensor(bytes, torch::kUInt8), /*is_buffer=*/true);
}

std::vector<char> read_flags(torch::serialize::InputArchive& ar, const std::string& key) {
  const auto bytes = from_tensor<uint8_t>(read_tensor(ar, key, torch::kUInt8));
  return std::vector<char>(bytes.begin(), bytes.end());
}

void write_json(torch::serialize::OutputArchive& ar, const std::string& key, const nlohmann::json& v) {
  ar.write(key, c10::IValue(v.dump()));
}

nlohmann::json read_json(torch::serialize::InputArchive& ar, const std::string& key) {
  c10::IValue v;
  ar.read(key, v);
  TORCH_CHECK(v.isString(), "checkpoint entry '", key, "' is not text");
  try {
    return nlohmann::json::parse(v.toStringRef());
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("checkpoint entry '" + key + "' is not valid JSON: " + e.what());
  }
}

void write_tensors(torch::serialize::OutputArchive& ar, const std::string& key,
                   const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  torch::serialize::OutputArchive sub;
  nlohmann::json names = nlohmann::json::array();
  for (size_t i = 0; i < tensors.size(); ++i) {
    names.push_back(tensors[i].first);
    sub.write(std::to_string(i), tensors[i].second.detach(), /*is_buffer=*/true);
  }
  write_json(sub, "names", names);
  ar.write(key, sub);
}

std::vector<std::pair<std::string, torch::Tensor>> read_tensors(torch::serialize::InputArchive& ar,
                                                                const std::string& key) {
  torch::serialize::InputArchive sub;
  ar.read(key, sub);
  const nlohmann::json names = read_json(sub, "names");
  if (!names.is_array()) throw std::runtime_error("checkpoint entry '" + key + "' has no list of names");
  for (const auto& name : names)
    if (!name.is_string()) throw std::runtime_error("checkpoint entry '" + key + "' has a name that is not text");
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < names.size(); ++i) {
    torch::Tensor t;
    sub.read(std::to_string(i), t, /*is_buffer=*/true);
    check_in_storage(t, key + "/" + names[i].get<std::string>());
    out.emplace_back(names[i].get<std::string>(), t);
  }
  return out;
}

}  // namespace cerebra
