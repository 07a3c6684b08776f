// The one place where a config is read by key: every part of a run's spec is parsed and checked here (the mixers'
// own options by their registrations, include/cerebra/models/mixer.h).
#include "cerebra/train/spec.h"

#include <fmt/core.h>

#include "cerebra/data/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace cerebra {

namespace {

// Keys of the streaming synthetic tasks (include/cerebra/data/synthetic_stream.h), registered beside their parsing.
const bool kStreamTaskKeys = [] {
  register_config_keys({
      {"power_a", ValueType::Float, "0.01", "mqar: query gaps drawn with p(g) ∝ (g+1)^(power_a-1), as in Zoology "
       "(1 = uniform; small = most queries close to the key-value pairs)", {}, "task"},
      {"random_non_queries", ValueType::Bool, "true", "mqar: positions between the queries hold uniform random data "
       "tokens (Zoology); false = NOISE", {}, "task"},
      {"num_triggers", ValueType::Int, "1", "induction_heads: occurrences of each trigger-X bigram in the context", {},
       "task"},
      {"train_lengths", ValueType::String, "", "mqar, selective_copy, induction_heads: comma-separated lengths of the "
       "training batches, each batch drawn at one of them (a mixed-length curriculum, as Zoology trains MQAR); "
       "n_pairs, n_queries and n_data_tokens scale with the length; validation and test stay at seq_len "
       "(empty = seq_len)", {}, "task"},
  });
  return true;
}();

TaskSpec parse_task(const Config& c) {
  TaskSpec t;
  t.name = c.get_string("task");
  t.seed = static_cast<uint64_t>(c.get_int("seed"));
  t.val_fraction = c.get_float("val_fraction");
  t.test_fraction = c.get_float("test_fraction");
  t.max_rows = c.get_int("max_rows");
  t.data = c.get_string("data");
  t.data_dir = c.get_string("data_dir");
  t.target = c.get_string("target");
  t.target_transform = c.get_string("target_transform");
  t.categorical = c.get_list("categorical");
  t.numeric = c.get_list("numeric");
  t.drop = c.get_list("drop");
  SyntheticSpec& s = t.synthetic;
  s.n = c.get_int("seq_len");
  s.vocab = c.get_int("vocab_size");
  s.n_data = c.get_int("n_data_tokens");
  s.n_pairs = c.get_int("n_pairs");
  s.n_queries = c.get_int("n_queries");  // 0 = the task's default (seq_tasks.h)
  s.mask_fraction = c.get_float("mask_fraction");
  s.power_a = c.get_float("power_a");
  s.random_non_queries = c.get_bool("random_non_queries");
  s.num_triggers = c.get_int("num_triggers");
  for (const auto& item : c.get_list("train_lengths")) {
    size_t used = 0;
    int64_t L = 0;
    try {
      L = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || L < 1)
      throw ConfigError(fmt::format("train_lengths: '{}' is not a positive whole number (expected e.g. 64,128,256)",
                                    item));
    s.train_lengths.push_back(L);
  }
  t.train_examples = c.get_int("train_examples");
  t.val_examples = c.get_int("val_examples");
  t.test_examples = c.get_int("test_examples");
  t.steps = c.get_int("steps");
  t.batch_size = c.get_int("batch_size");
  t.max_len = c.get_int("max_len");
  t.error_on_long = c.get_string("length_policy") == "error";
  t.wordnet_dir = c.get_string("wordnet_dir");
  t.tokenizer.kind = c.get_string("tokenizer");
  t.tokenizer.vocab_size = c.get_int("vocab_size");
  t.tokenizer.model_type = c.get_string("sentencepiece_model");
  validate_tokenizer(t.tokenizer, t.name);
  if (t.max_rows < 0) throw ConfigError(fmt::format("max_rows must be >= 0 (0 = all), got {}", t.max_rows));
  return t;
}

ModelSpec parse_model(const Config& c) {
  ModelSpec m;
  m.name = c.get_string("model");
  m.mlp_hidden = c.get_int("mlp_hidden");
  m.tie_embeddings = c.get_bool("tie_embeddings");
  m.xgb.rounds = c.get_int("xgb_rounds");
  m.xgb.max_depth = c.get_int("xgb_max_depth");
  m.xgb.eta = c.get_float("xgb_eta");
  m.xgb.subsample = c.get_float("xgb_subsample");
  m.xgb.seed = static_cast<uint64_t>(c.get_int("seed"));
  TextBaselineParams& tb = m.text;
  tb.ngrams = c.get_int("text_ngrams");
  tb.min_df = c.get_int("text_min_df");
  tb.nb_alpha = c.get_float("nb_alpha");
  tb.logreg_epochs = c.get_int("logreg_epochs");
  tb.logreg_patience = c.get_int("logreg_patience");
  tb.logreg_batch = c.get_int("logreg_batch");
  tb.logreg_lr = c.get_float("logreg_lr");
  tb.logreg_l2 = c.get_float("logreg_l2");
  tb.seed = static_cast<uint64_t>(c.get_int("seed"));
  if (tb.ngrams < 1 || tb.ngrams > 2) throw ConfigError(fmt::format("text_ngrams must be 1 or 2, got {}", tb.ngrams));
  if (tb.min_df < 1) throw ConfigError(fmt::format("text_min_df must be >= 1, got {}", tb.min_df));
  if (tb.nb_alpha < 0) throw ConfigError("nb_alpha must be >= 0 (0 = chosen on validation), got " + c.get_string("nb_alpha"));
  if (tb.logreg_epochs < 1 || tb.logreg_patience < 1 || tb.logreg_batch < 1)
    throw ConfigError(fmt::format("logreg_epochs, logreg_patience and logreg_batch must be >= 1, got {}, {}, {}",
                                  tb.logreg_epochs, tb.logreg_patience, tb.logreg_batch));
  if (!(tb.logreg_lr > 0)) throw ConfigError("logreg_lr must be > 0, got " + c.get_string("logreg_lr"));
  if (tb.logreg_l2 < 0) throw ConfigError("logreg_l2 must be >= 0, got " + c.get_string("logreg_l2"));
  BackboneOptions& b = m.backbone;
  b.mixer = mixer_for_model(m.name);
  b.n_layers = c.get_int("n_layers");
  b.ffn_mult = c.get_int("ffn_mult");
  b.dropout = c.get_float("dropout");
  b.mixer_options.d_model = c.get_int("d_model");
  b.mixer_options.n_heads = c.get_int("n_heads");
  b.mixer_options.dropout = b.dropout;
  if (b.n_layers < 1) throw ConfigError(fmt::format("n_layers must be >= 1, got {}", b.n_layers));
  if (b.mixer_options.d_model < 1 || b.mixer_options.n_heads < 1)
    throw ConfigError(fmt::format("d_model and n_heads must be >= 1, got {} and {}", b.mixer_options.d_model,
                                  b.mixer_options.n_heads));
  if (b.ffn_mult < 0) throw ConfigError(fmt::format("ffn_mult must be >= 0, got {}", b.ffn_mult));
  const auto mixers = mixer_names();
  auto registered = [&](const std::string& name) { return std::find(mixers.begin(), mixers.end(), name) != mixers.end(); };
  if (registered(b.mixer)) b.mixer_options.own = mixer_def(b.mixer).parse(c);
  // Hybrids: one mixer per layer, each with its own options; n_layers follows the list.
  for (const auto& entry : c.get_list("layers")) {
    const std::string name = mixer_for_model(entry);
    if (!registered(name)) {
      std::string known = "transformer";
      for (const auto& n : mixers) known += ", " + n;
      throw ConfigError(fmt::format("layers: unknown mixer '{}' at position {}; registered: {}", entry,
                                    b.layers.size(), known));
    }
    b.layers.push_back(name);
    if (name != b.mixer && !b.layer_own.count(name)) b.layer_own[name] = mixer_def(name).parse(c);
  }
  if (!b.layers.empty()) b.n_layers = static_cast<int64_t>(b.layers.size());
  b.ffn_layers = c.get_list("ffn_layers");
  for (const auto& k : b.ffn_layers)
    if (k != "dense" && k != "moe")
      throw ConfigError(fmt::format("ffn_layers: unknown feed-forward kind '{}'; expected dense or moe", k));
  if (b.ffn_layers.size() > 1 && static_cast<int64_t>(b.ffn_layers.size()) != b.n_layers)
    throw ConfigError(fmt::format("ffn_layers lists {} kinds for {} layers; give one per layer or one for all",
                                  b.ffn_layers.size(), b.n_layers));
  if (b.ffn_mult == 0 && std::find(b.ffn_layers.begin(), b.ffn_layers.end(), "moe") != b.ffn_layers.end())
    throw ConfigError("ffn_layers asks for moe but ffn_mult is 0 (no feed-forward block)");
  b.short_conv = c.get_int("short_conv");
  if (b.short_conv < 0) throw ConfigError(fmt::format("short_conv must be >= 0 (0 = off), got {}", b.short_conv));
  b.moe.experts = c.get_int("moe_experts");
  b.moe.topk = c.get_int("moe_topk");
  b.moe.capacity = c.get_float("moe_capacity");
  b.moe.aux_weight = c.get_float("moe_aux_weight");
  try {
    b.moe.validate();
  } catch (const std::invalid_argument& e) {
    throw ConfigError(e.what());
  }
  return m;
}

SamplerOptions parse_sampler(const Config& c) {
  SamplerOptions o;
  const std::string mode = c.get_string("sampler");
  o.enabled = mode == "compute_aware" || mode == "true";
  o.beta = c.get_float("sampler_beta");
  o.gamma = c.get_float("sampler_gamma");
  o.floor = c.get_float("sampler_floor");
  o.start_epoch = c.get_int("sampler_start_epoch");
  o.ema = c.get_float("sampler_ema");
  o.validate();
  return o;
}

TrainerOptions parse_trainer(const Config& c) {
  TrainerOptions o;
  o.epochs = c.get_int("epochs");
  o.steps = c.get_int("steps");
  o.batch_size = c.get_int("batch_size");
  o.eval_batch_size = c.get_int("eval_batch_size");
  o.patience = c.get_int("patience");
  o.lr = c.get_float("lr");
  o.weight_decay = c.get_float("weight_decay");
  o.warmup_epochs = c.get_float("warmup_epochs");
  o.min_lr_ratio = c.get_float("min_lr_ratio");
  o.grad_clip = c.get_float("grad_clip");
  o.lr_schedule = c.get_string("lr_schedule");
  o.seed = static_cast<uint64_t>(c.get_int("seed"));
  o.sampler = parse_sampler(c);
  o.checkpoint_every = c.get_int("checkpoint_every");
  o.log_every = c.get_int("log_every");
  o.group_by_length = c.get_bool("group_by_length");
  o.nan_policy = c.get_string("nan_policy");
  o.nan_skip_limit = c.get_int("nan_skip_limit");
  if (o.checkpoint_every < 0)
    throw ConfigError("checkpoint_every must be >= 0 (0 = at epoch ends only), got " + std::to_string(o.checkpoint_every));
  if (o.log_every < 0)
    throw ConfigError("log_every must be >= 0 (0 = epoch ends only), got " + std::to_string(o.log_every));
  if (o.nan_skip_limit < 0) throw ConfigError("nan_skip_limit must be >= 0, got " + std::to_string(o.nan_skip_limit));
  if (o.epochs < 1) throw ConfigError("epochs must be >= 1, got " + std::to_string(o.epochs));
  if (o.steps < 0) throw ConfigError("steps must be >= 0 (0 = epochs), got " + std::to_string(o.steps));
  if (o.batch_size < 1) throw ConfigError("batch_size must be >= 1, got " + std::to_string(o.batch_size));
  if (o.eval_batch_size < 1) throw ConfigError("eval_batch_size must be >= 1");
  if (!(o.lr > 0)) throw ConfigError("lr must be > 0, got " + c.get_string("lr"));
  return o;
}

ComputeSchedule parse_compute(const Config& c) {
  ComputeSchedule s;
  s.warm_epochs = c.get_float("warm_epochs");
  s.ramp_epochs = c.get_float("lambda_ramp_epochs");
  s.lambda0 = c.get_float("lambda0");
  s.lambda_target = c.get_float("lambda");
  s.tau = c.get_float("tau");
  s.tau_min = c.get_float("tau_min");
  if (!(s.warm_epochs >= 0) || !(s.ramp_epochs >= 0) || !std::isfinite(s.warm_epochs + s.ramp_epochs))
    throw ConfigError("warm_epochs and lambda_ramp_epochs must be finite and >= 0, got " +
                      c.get_string("warm_epochs") + " and " + c.get_string("lambda_ramp_epochs"));
  if (s.lambda0 < 0 || s.lambda_target < 0) throw ConfigError("lambda and lambda0 must be >= 0");
  if (!(s.tau > 0) || !(s.tau_min > 0)) throw ConfigError("tau and tau_min must be > 0");
  return s;
}

PruneSchedule parse_prune(const Config& c) {
  PruneSchedule s;
  s.start_epoch = c.get_int("prune_start_epoch");
  s.epochs = c.get_int("prune_epochs");
  s.target = c.get_float("prune_target");
  s.kinds = c.get_list("prune_kinds");
  if (s.start_epoch < 0) throw ConfigError("prune_start_epoch must be >= 0 (0 = off), got " + std::to_string(s.start_epoch));
  if (s.epochs < 1) throw ConfigError("prune_epochs must be >= 1, got " + std::to_string(s.epochs));
  if (!(s.target >= 0 && s.target < 1))
    throw ConfigError("prune_target must be in [0, 1), got " + c.get_string("prune_target"));
  for (const auto& k : s.kinds)
    if (k != "heads" && k != "ffn" && k != "channels")
      throw ConfigError("prune_kinds: unknown kind '" + k + "'; expected a comma-separated list of heads, ffn, channels");
  if (s.enabled() && s.kinds.empty()) throw ConfigError("prune_kinds is empty but prune_target > 0");
  return s;
}

QuantSpec parse_quant(const Config& c, const ModelSpec& model, int64_t epochs, bool training) {
  QuantSpec q;
  q.qat = c.get_bool("qat");
  q.qat_start_epoch = c.get_int("qat_start_epoch");
  const int64_t bits = c.get_int("qat_bits");
  q.ema = c.get_float("qat_ema");
  q.int8 = c.get_bool("int8");
  q.int8_engine = c.get_string("int8_engine");
  q.int8_activations = c.get_string("int8_activations");
  if (bits < 2 || bits > 8) throw ConfigError("qat_bits must be in [2, 8], got " + std::to_string(bits));
  q.bits = static_cast<int>(bits);
  if (!(q.ema >= 0.0 && q.ema < 1.0)) throw ConfigError("qat_ema must be in [0, 1), got " + c.get_string("qat_ema"));
  if (q.qat) {
    if (model.is_estimator())
      throw ConfigError("qat: true needs a neural model; model '" + model.name + "' has no Linear layers");
    if (training && (q.qat_start_epoch < 1 || q.qat_start_epoch > epochs))
      throw ConfigError(fmt::format("qat_start_epoch must be in [1, epochs = {}], got {}", epochs, q.qat_start_epoch));
  }
  if (q.int8) {
    if (training)
      throw ConfigError("int8: true is written by `cerebra export --int8` for inference; to train for int8 use "
                        "qat: true, then export");
    if (model.is_estimator()) throw ConfigError("int8: true needs a neural model, got '" + model.name + "'");
  }
  return q;
}

RuntimeSpec parse_runtime(const Config& c) {
  RuntimeSpec r;
  const int64_t threads = c.get_int("threads");
  if (threads < 0) throw ConfigError(fmt::format("threads must be >= 0 (0 = the cores idle at the start), got {}", threads));
  r.threads = static_cast<int>(threads);
  r.allow_slow_blas = c.get_bool("allow_slow_blas");
  return r;
}

}  // namespace

std::string RunSpec::default_run_dir() const {
  return fmt::format("runs/{}-{}-s{}", task.name, model.name, trainer.seed);
}

RunSpec parse_run_spec(const Config& config, bool training) {
  RunSpec s;
  s.config = config;
  s.runtime = parse_runtime(config);
  s.task = parse_task(config);
  s.model = parse_model(config);
  s.trainer = parse_trainer(config);
  s.compute = parse_compute(config);
  s.prune = parse_prune(config);
  s.quant = parse_quant(config, s.model, s.trainer.epochs, training);
  return s;
}

}  // namespace cerebra
