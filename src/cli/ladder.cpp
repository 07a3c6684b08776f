// `cerebra reproduce ladder`: see include/cerebra/cli/ladder.h.
#include "cerebra/cli/ladder.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include "cerebra/core/io.h"
#include "cerebra/models/mixer.h"
#include "cerebra/train/spec.h"

namespace fs = std::filesystem;

namespace cerebra {

namespace {

std::string where(const std::string& file, const YAML::Node& n) {
  return n.Mark().is_null() ? file : fmt::format("{}:{}", file, n.Mark().line + 1);
}

void check_keys(const std::string& file, const YAML::Node& map, const std::string& what,
                const std::set<std::string>& allowed) {
  if (!map.IsMap()) throw ConfigError(fmt::format("{}: {} must be a mapping", where(file, map), what));
  for (const auto& kv : map) {
    const std::string key = kv.first.as<std::string>();
    if (allowed.count(key)) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw ConfigError(fmt::format("{}: unknown key '{}' in {} (expected one of: {})", where(file, kv.first), key,
                                  what, list));
  }
}

// A list given as a YAML sequence or as one comma-separated string.
std::vector<std::string> list_of(const std::string& file, const YAML::Node& n, const std::string& what) {
  std::vector<std::string> out;
  if (n.IsSequence()) {
    for (const auto& e : n) {
      if (!e.IsScalar()) throw ConfigError(fmt::format("{}: {}: expected a list of names", where(file, e), what));
      out.push_back(e.as<std::string>());
    }
  } else if (n.IsScalar()) {
    std::stringstream ss(n.as<std::string>());
    for (std::string s; std::getline(ss, s, ',');)
      if (!s.empty()) out.push_back(s);
  } else {
    throw ConfigError(fmt::format("{}: {}: expected a list", where(file, n), what));
  }
  if (out.empty()) throw ConfigError(fmt::format("{}: {}: the list is empty", where(file, n), what));
  return out;
}

int64_t positive_int(const std::string& file, const YAML::Node& n, const std::string& what, int64_t min) {
  int64_t v = 0;
  try {
    if (!n.IsScalar()) throw std::invalid_argument("not a scalar");
    size_t used = 0;
    const std::string text = n.as<std::string>();
    v = std::stoll(text, &used);
    if (used != text.size()) throw std::invalid_argument("trailing text");
  } catch (const std::exception&) {
    throw ConfigError(fmt::format("{}: {}: expected an integer", where(file, n), what));
  }
  if (v < min) throw ConfigError(fmt::format("{}: {} must be >= {} (got {})", where(file, n), what, min, v));
  return v;
}

void apply_set(Config& c, const std::string& file, const YAML::Node& n, const std::string& what) {
  if (!n) return;
  if (!n.IsMap()) throw ConfigError(fmt::format("{}: {}: expected a mapping of config key: value", where(file, n), what));
  for (const auto& kv : n) {
    if (!kv.second.IsScalar())
      throw ConfigError(fmt::format("{}: {} {}: expected a single value", where(file, kv.second), what,
                                    kv.first.as<std::string>()));
    c.set(kv.first.as<std::string>(), kv.second.as<std::string>(), where(file, kv.second) + " " + what);
  }
}

// The manifest's learning rates (a list or "a,b,c"), validated by the bench's own parser.
std::vector<double> lrs_of(const std::string& file, const YAML::Node& n) {
  std::string joined;
  for (const auto& s : list_of(file, n, "lr_sweep")) joined += (joined.empty() ? "" : ",") + s;
  try {
    return parse_lr_sweep(joined);
  } catch (const ConfigError& e) {
    throw ConfigError(where(file, n) + ": " + e.what());
  }
}

}  // namespace

std::vector<LadderRung> plan_ladder(const LadderOptions& o) {
  const std::string& file = o.manifest;
  if (!fs::is_regular_file(file)) throw ConfigError(file + ": ladder manifest not found");
  YAML::Node doc;
  try {
    doc = YAML::LoadFile(file);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}:{}: YAML syntax error: {}", file, e.mark.line + 1, e.msg));
  }
  check_keys(file, doc, "the manifest",
             {"rungs", "models", "budget_params", "lr_sweep", "seeds", "sweep_seeds", "set", "model_set", "quick"});
  if (!doc["rungs"] || !doc["rungs"].IsSequence() || doc["rungs"].size() == 0)
    throw ConfigError(file + ": expected a non-empty list `rungs:`");
  if (!doc["models"]) throw ConfigError(file + ": expected `models:` (the models every rung trains)");
  const bool has_quick = o.quick && doc["quick"];
  const YAML::Node quick = has_quick ? doc["quick"] : YAML::Node();
  if (doc["quick"]) check_keys(file, doc["quick"], "quick", {"rungs", "models", "budget_params", "lr_sweep", "seeds", "set"});
  auto pick = [&](const char* key) { return has_quick && quick[key] ? quick[key] : doc[key]; };

  std::vector<std::string> models = o.models.empty() ? list_of(file, pick("models"), "models") : o.models;
  SeqBenchOptions bench;
  bench.quiet_runs = o.quiet;
  if (pick("budget_params")) bench.budget_params = positive_int(file, pick("budget_params"), "budget_params", 0);
  if (!o.lrs.empty()) bench.lrs = o.lrs;
  else if (pick("lr_sweep")) bench.lrs = lrs_of(file, pick("lr_sweep"));
  const int64_t default_seeds = pick("seeds") ? positive_int(file, pick("seeds"), "seeds", 1) : 1;
  if (doc["sweep_seeds"]) bench.sweep_seeds = positive_int(file, doc["sweep_seeds"], "sweep_seeds", 1);
  if (o.sweep_seeds >= 0) bench.sweep_seeds = o.sweep_seeds;
  if (const YAML::Node ms = doc["model_set"]) {  // per-model config keys: {mamba: {short_conv: 0}, ...}
    if (!ms.IsMap())
      throw ConfigError(fmt::format("{}: model_set: expected a mapping of model: {{config key: value}}", where(file, ms)));
    const std::vector<std::string> mixers = mixer_names();
    for (const auto& kv : ms) {
      const std::string m = kv.first.as<std::string>();
      if (m != "transformer" && std::find(mixers.begin(), mixers.end(), m) == mixers.end())
        throw ConfigError(fmt::format("{}: model_set: unknown model '{}'", where(file, kv.first), m));
      if (!kv.second.IsMap() || kv.second.size() == 0)
        throw ConfigError(fmt::format("{}: model_set {}: expected a mapping of config key: value", where(file, kv.second), m));
      for (const auto& e : kv.second) {
        if (!e.second.IsScalar())
          throw ConfigError(fmt::format("{}: model_set {} {}: expected a single value", where(file, e.second), m,
                                        e.first.as<std::string>()));
        const std::string key = e.first.as<std::string>();
        // The command line has the last word: `--set short_conv=2` holds for this model too.
        const bool overridden = std::any_of(o.overrides.begin(), o.overrides.end(),
                                            [&](const auto& ov) { return ov.first == key; });
        if (!overridden) bench.model_set[m].emplace_back(key, e.second.as<std::string>());
      }
    }
  }

  std::vector<std::string> keep = o.rungs;
  if (keep.empty() && has_quick && quick["rungs"]) keep = list_of(file, quick["rungs"], "quick.rungs");
  const fs::path base_dir = fs::path(file).parent_path();
  std::vector<LadderRung> rungs;
  std::set<std::string> names;
  for (const auto& r : doc["rungs"]) {
    check_keys(file, r, "a rung", {"config", "seeds", "budget_params", "set"});
    if (!r["config"] || !r["config"].IsScalar())
      throw ConfigError(fmt::format("{}: each rung needs `config:` (a config file)", where(file, r)));
    const fs::path cfg = base_dir / r["config"].as<std::string>();
    LadderRung rung;
    rung.name = cfg.stem().string();
    if (!names.insert(rung.name).second)
      throw ConfigError(fmt::format("{}: rung {} appears twice", where(file, r), rung.name));
    if (!keep.empty() && std::find(keep.begin(), keep.end(), rung.name) == keep.end()) continue;
    if (!fs::is_regular_file(cfg))
      throw ConfigError(fmt::format("{}: rung config {} not found", where(file, r["config"]), cfg.string()));
    rung.config.load_yaml_file(cfg.string());
    apply_set(rung.config, file, doc["set"], "set");
    apply_set(rung.config, file, r["set"], "set");
    if (has_quick) apply_set(rung.config, file, quick["set"], "quick.set");
    for (const auto& [k, v] : o.overrides) rung.config.set(k, v, "command line --" + k);
    parse_run_spec(rung.config);  // bad values fail here, before any run
    for (const auto& [m, kv] : bench.model_set) {
      Config c = rung.config;
      c.set("model", m, "model_set");
      for (const auto& [k, v] : kv) c.set(k, v, fmt::format("{} model_set {}", file, m));
      parse_run_spec(c);
    }
    rung.models = models;
    rung.bench = bench;
    if (r["budget_params"] && !(has_quick && quick["budget_params"]))  // the rung's own budget (e.g. a larger vocabulary)
      rung.bench.budget_params = positive_int(file, r["budget_params"], "budget_params", 0);
    rung.bench.seeds = o.seeds > 0                   ? o.seeds
                       : has_quick && quick["seeds"] ? default_seeds
                       : r["seeds"]                  ? positive_int(file, r["seeds"], "seeds", 1)
                                                     : default_seeds;
    rungs.push_back(std::move(rung));
  }
  for (const auto& k : keep)
    if (!names.count(k)) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      throw ConfigError(fmt::format("{}: no rung named '{}' (rungs: {})", file, k, list));
    }
  return rungs;
}

int run_ladder(const LadderOptions& o) {
  const std::vector<LadderRung> rungs = plan_ladder(o);
  check_writable_dir(o.out);
  int status = 0;
  std::string md = fmt::format("# Difficulty ladder{}\n\nManifest `{}`. Each rung: every model at the manifest's "
                               "parameter budget, the learning rate selected on validation (*), mean ± std over "
                               "seeds. Plots: `<rung>/results.png`.\n",
                               o.quick ? " (quick)" : "", o.manifest);
  for (size_t i = 0; i < rungs.size(); ++i) {
    const LadderRung& r = rungs[i];
    const fs::path dir = fs::path(o.out) / r.name;
    std::cerr << fmt::format("=== rung {} of {}: {} ({} models, {} learning rate{}, {} seed{}) -> {}\n", i + 1,
                             rungs.size(), r.name, r.models.size(), std::max<size_t>(1, r.bench.lrs.size()),
                             r.bench.lrs.size() > 1 ? "s" : "", r.bench.seeds, r.bench.seeds > 1 ? "s" : "",
                             dir.string());
    if (bench_seq_tasks(r.config, r.models, dir.string(), r.bench) != 0) status = 1;
    md += fmt::format("\n## {}\n\n```\n{}```\n", r.name, read_text_file(dir / "results.txt"));
  }
  std::ofstream(fs::path(o.out) / "ladder.md") << md;
  std::cerr << fmt::format("wrote {}/ladder.md and one directory per rung\n", o.out);
  return status;
}

}  // namespace cerebra
