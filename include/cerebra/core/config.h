// Experiment configuration: a typed schema of flat keys, YAML files that may inherit (`base: other.yaml`),
// and command-line overrides. Unknown keys and values of the wrong type are rejected with messages that name
// the file, the key and what was expected.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace cerebra {

enum class ValueType { Int, Float, String, Bool };

struct KeySpec {
  std::string name;
  ValueType type;
  std::string default_value;
  std::string help;
  std::vector<std::string> choices;  // allowed values for strings (empty = any)
  std::string group;                 // for --help: "data", "model", "training", ...
};

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Config {
 public:
  // Every key with its default.
  Config();
  static const std::vector<KeySpec>& schema();
  static const KeySpec* find_key(const std::string& name);

  // Loads a YAML mapping of key: value. A `base:` key names a file (relative to this one) loaded first.
  void load_yaml_file(const std::string& path);
  // Sets one key from text; `origin` says where it came from (for error messages).
  void set(const std::string& key, const std::string& value, const std::string& origin);

  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_list(const std::string& key) const;  // comma-separated string, trimmed, no empties

  std::string to_yaml() const;  // fully resolved, every key, in schema order
  nlohmann::json to_json() const;
  // Keys whose value differs from the default.
  std::map<std::string, std::string> changed() const;
  // Keys whose value differs in `other`, in schema order, as "key: this value -> other's value".
  std::vector<std::string> differences(const Config& other) const;

 private:
  void load_yaml_file_depth(const std::string& path, int depth);
  std::map<std::string, std::string> values_;
};

// Adds keys to the schema: components registered at static initialisation (each sequence mixer's own options)
// contribute theirs, so YAML files and the command line accept them and `--help` lists them. A key registered twice
// must have the same type and default (two mixers may share one); otherwise std::logic_error. Must run before the
// schema is first used (static initialisation).
void register_config_keys(const std::vector<KeySpec>& keys);

// "Did you mean" help: the valid keys closest to `name`, then the full list.
std::string describe_unknown_key(const std::string& name);

}  // namespace cerebra
