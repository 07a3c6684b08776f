// The generic trainer every run uses (the run pipeline itself: include/cerebra/train/run.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <torch/serialize/archive.h>

#include "cerebra/models/models.h"
#include "cerebra/train/sampler.h"

namespace cerebra {

class Distributed;  // cerebra/train/distributed.h

// ---- the generic trainer (AdamW, warm-up + decay, early stopping on validation loss, best weights kept)

struct TrainerOptions {
  int64_t epochs = 30, batch_size = 128, eval_batch_size = 1024, patience = 6;
  int64_t steps = 0;  // sequence tasks: a budget of optimizer steps instead of epochs (0 = epochs)
  double lr = 1e-3, weight_decay = 1e-4, warmup_epochs = 1, min_lr_ratio = 0.05, grad_clip = 1.0;
  std::string lr_schedule = "cosine";
  uint64_t seed = 42;
  bool quiet = false;
  std::string metrics_path;  // metrics.jsonl; empty = not written
  // Every log_every optimizer steps inside an epoch (0 = never): validate and append a line to steps_path
  // (steps.jsonl; empty = not written), printed unless quiet.
  int64_t log_every = 0;
  std::string steps_path;
  SamplerOptions sampler;    // compute-aware sampler (cerebra/sampler.h); off = seeded shuffles
  // Batches of similar lengths (needs TrainerHooks::example_length): each window of 50 batches of an
  // epoch's shuffled order is sorted by length and cut into batches, and the full batches are shuffled.
  bool group_by_length = false;
  // The resume checkpoint (see "Checkpoints" below); empty = none written.
  std::string checkpoint_path;
  int64_t checkpoint_every = 500;  // also every N optimizer steps inside an epoch (0 = at epoch ends only)
  bool resume = false;             // continue from checkpoint_path when it exists
  // A non-finite loss or gradient: "stop" (throws TrainingDiverged) or "skip" the step, at most nan_skip_limit times.
  std::string nan_policy = "stop";
  int64_t nan_skip_limit = 10;
  // Data-parallel training (null = one process): each rank trains on its slice of every batch of batch_size rows
  // (the global batch), gradients and the values that steer training are combined over ranks, and only rank 0
  // writes (give the others no metrics_path); the resume checkpoint is read by rank 0 and sent to the others.
  Distributed* dist = nullptr;
};

// A NaN or inf in the loss or the gradients stopped training (nan_policy stop, or more skipped steps than allowed).
// The message names the epoch and step and the last good checkpoint.
class TrainingDiverged : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrainerHooks {
  std::function<Batch(const std::vector<int64_t>& rows)> make_batch;
  // The length of a row's example (group_by_length).
  std::function<int64_t(int64_t row)> example_length;
  // Scalar training loss of a prediction (B, n_out) for a batch.
  std::function<torch::Tensor(const torch::Tensor& pred, const Batch& batch)> loss;
  // Extra fields for the epoch's metrics line, computed from the validation loss.
  std::function<nlohmann::json(double val_loss)> describe_val;
  // Optional compute-aware objective: called at the start of each (1-based) epoch, to turn the task loss of a
  // batch into the training objective, and after validation for extra fields of the epoch's metrics line.
  std::function<void(int64_t epoch)> on_epoch_begin;
  // Optional, before each optimiser step: the epochs of training completed, (epoch − 1) + batch / batches per epoch.
  std::function<void(double position)> on_step_begin;
  std::function<torch::Tensor(const torch::Tensor& task_loss, const Batch& batch)> objective;
  std::function<nlohmann::json()> epoch_report;
  // Epochs before this one (e.g. dense warm-up and the λ ramp) are neither kept as best nor counted for patience.
  int64_t first_selectable_epoch = 1;
  // Compute-aware sampler (required when TrainerOptions::sampler is on): the unreduced loss (B,) of a prediction,
  // and optionally, after a batch's forward, each of its examples' realised compute Ĉ relative to the dense model
  // (the sampler keeps each example's last value; 1 before its first pass).
  std::function<torch::Tensor(const torch::Tensor& pred, const Batch& batch)> per_example_loss;
  std::function<std::vector<double>(const Batch& batch)> batch_cost;
  // Optional, after each backward pass while the gradients are in .grad() (e.g. pruning saliencies).
  std::function<void(int64_t epoch)> after_backward;
  // Optional, at the end of an epoch's training, before validation. Returns true when the model's parameters were
  // replaced (structured pruning): the optimiser is rebuilt and the kept best weights are reset to this model.
  std::function<bool(int64_t epoch)> on_epoch_end;
  // Optional, the hooks' own state in each resume checkpoint (compute schedule, pruner, QAT), and its restoration.
  // load_state runs before the model's weights load, so it can first give the model its pruned shapes, and it must
  // leave the components as they were when the state was saved (mid-epoch: without another on_epoch_begin).
  std::function<void(torch::serialize::OutputArchive&)> save_state;
  std::function<void(torch::serialize::InputArchive&)> load_state;
};

struct TrainResult {
  int64_t epochs_run = 0, best_epoch = 0;
  double best_val_loss = 0;
  std::vector<double> epoch_seconds;
  double examples_per_second = 0;  // training examples per second over all epochs
  int64_t nan_skipped_steps = 0;   // nan_policy skip: steps skipped for a non-finite loss or gradient
  int64_t resumes = 0;             // times this training continued from a checkpoint
};

// ---- checkpoints
//
// With TrainerOptions::checkpoint_path set, train_model writes a resume checkpoint at the end of every epoch and
// every checkpoint_every steps inside one, atomically (temporary file, fsync, rename: the last good checkpoint is
// replaced only by a complete one). It holds everything the rest of the run depends on: the weights, the AdamW
// state, the best weights so far and their epoch and validation loss, the early-stopping counter, the epoch, batch
// and step reached (the learning rate is a function of the step), torch's CPU random generator (dropout, Gumbel
// noise, feature redraws), the data order (the shuffled permutation carried from epoch to epoch and this epoch's
// order; each epoch's shuffle or draw is seeded from the seed and the epoch), the sampler's state, the partial sums
// of the epoch being trained, the length of metrics.jsonl, and the hooks' state (save_state). With resume set,
// training continues from it and ends with the same weights and metrics as a run that was never stopped (same
// threads). The checkpoint of a finished training records that it finished.

// True when every parameter's gradient is finite (one reduction over all of them); checked before each update.
bool gradients_finite(const Model& model);

TrainResult train_model(Model& model, const std::vector<int64_t>& train_rows, const std::vector<int64_t>& val_rows,
                        const TrainerOptions& options, const TrainerHooks& hooks);

// Predictions (B_total, n_out) for the given rows, in eval mode without gradients.
torch::Tensor predict(Model& model, const std::vector<int64_t>& rows, int64_t batch_size,
                      const std::function<Batch(const std::vector<int64_t>&)>& make_batch);

void save_model(const Model& model, const std::string& path);
void load_model(Model& model, const std::string& path);

}  // namespace cerebra
