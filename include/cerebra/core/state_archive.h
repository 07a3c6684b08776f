// Small values in torch archives (the resume checkpoint, include/cerebra/train/train.h): scalars as IValues,
// vectors as tensors, JSON as text, all exact (doubles as float64). A missing or mistyped entry throws (c10::Error
// or std::runtime_error), naming the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/serialize/archive.h>

namespace cerebra {

// Reads a torch archive, a file or its bytes, into `ar` once check_torch_archive (archive_check.h) has passed it.
// Every failure, the check's or LibTorch's own (c10::Error, torch::jit::ErrorReport), is thrown as
// std::runtime_error with LibTorch's message and without its backtrace; callers prefix what they were loading.
void load_archive(torch::serialize::InputArchive& ar, const std::string& path);
void load_archive_bytes(torch::serialize::InputArchive& ar, const std::string& bytes);

void write_int(torch::serialize::OutputArchive& ar, const std::string& key, int64_t v);
int64_t read_int(torch::serialize::InputArchive& ar, const std::string& key);
void write_double(torch::serialize::OutputArchive& ar, const std::string& key, double v);
double read_double(torch::serialize::InputArchive& ar, const std::string& key);
void write_doubles(torch::serialize::OutputArchive& ar, const std::string& key, const std::vector<double>& v);
std::vector<double> read_doubles(torch::serialize::InputArchive& ar, const std::string& key);
void write_ints(torch::serialize::OutputArchive& ar, const std::string& key, const std::vector<int64_t>& v);
std::vector<int64_t> read_ints(torch::serialize::InputArchive& ar, const std::string& key);
void write_flags(torch::serialize::OutputArchive& ar, const std::string& key, const std::vector<char>& v);
std::vector<char> read_flags(torch::serialize::InputArchive& ar, const std::string& key);
void write_json(torch::serialize::OutputArchive& ar, const std::string& key, const nlohmann::json& v);
nlohmann::json read_json(torch::serialize::InputArchive& ar, const std::string& key);
// Named tensors (e.g. a model's parameters and buffers by path), kept in order.
void write_tensors(torch::serialize::OutputArchive& ar, const std::string& key,
                   const std::vector<std::pair<std::string, torch::Tensor>>& tensors);
std::vector<std::pair<std::string, torch::Tensor>> read_tensors(torch::serialize::InputArchive& ar,
                                                                const std::string& key);

}  // namespace cerebra
