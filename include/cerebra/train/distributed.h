// Data-parallel training over c10d (LibTorch's collective library) with the Gloo backend.
//
// Every rank holds the whole model and the whole data set and trains on its slice of each global batch: the trainer
// (include/cerebra/train/train.h) splits every batch of `batch_size` rows into world_size contiguous slices, so the
// global batches and their order are those of one process with the same config. Gradients are averaged (each rank's
// weighted by its share of the batch) in buckets: a bucket is a flat buffer over consecutive parameters (in reverse
// order of registration, roughly the order backward produces them); a hook on each parameter copies its gradient
// into the bucket as backward computes it, and a full bucket is all-reduced at once, asynchronously, while backward
// goes on. Buckets are launched in the same order on every rank. What decides the course of training is made equal
// on every rank: the loss (for the NaN guard, the train loss and the sampler's per-example losses) and the
// validation loss are summed over ranks, gradients are averaged before clipping, pruning saliencies and the
// optimiser step, buffers (QAT ranges, random features) are broadcast from rank 0 before every step, and the
// resume checkpoint is rank 0's, sent to every rank.
//
// A rank that dies or stops answering makes the collectives of the others fail within `timeout_seconds`
// (closed connections fail at once), with an error naming the operation.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/types.h>

namespace cerebra {

class Model;

// Where this process stands in a data-parallel run (torchrun's conventions: RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
struct DistSpec {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_world_size = 1;  // ranks on this machine (threads per rank default to cores / these)
  std::string master_addr;                   // rank 0 hosts the rendezvous (a TCPStore) at master_addr:master_port
  int master_port = 0;
  double timeout_seconds = 120;  // rendezvous and every collective
  double bucket_mib = 1.0;       // gradient bucket size (MiB of float32)

  bool enabled() const { return world_size > 1; }
  bool root() const { return rank == 0; }
};

class Distributed {
 public:
  // Rendezvous through a TCPStore at master_addr:master_port (rank 0 hosts it), then a Gloo process group.
  // Throws when the others are not there within the timeout.
  explicit Distributed(const DistSpec& spec);
  ~Distributed();
  Distributed(const Distributed&) = delete;
  Distributed& operator=(const Distributed&) = delete;

  const DistSpec& spec() const { return spec_; }
  int rank() const { return spec_.rank; }
  int world_size() const { return spec_.world_size; }
  bool root() const { return spec_.rank == 0; }

  // This rank's part [lo', hi') of the global batch [lo, hi): contiguous slices in rank order, the first
  // (hi - lo) % world_size ranks one row longer (a rank may get none when the batch has fewer rows than ranks).
  std::pair<int64_t, int64_t> slice(int64_t lo, int64_t hi) const { return slice_of(lo, hi, rank(), world_size()); }
  static std::pair<int64_t, int64_t> slice_of(int64_t lo, int64_t hi, int rank, int world_size);

  // Collectives on small host values; `what` names the operation in errors.
  void allreduce_sum(std::vector<double>& values, const char* what);
  int64_t broadcast_int(int64_t value, const char* what);        // rank 0's value
  std::string broadcast_bytes(std::string bytes, const char* what);  // rank 0's bytes
  void broadcast(std::vector<torch::Tensor> tensors, const char* what);  // rank 0's values, in place
  // Sums a tensor over ranks in place (e.g. to measure the collective).
  void allreduce(torch::Tensor& tensor, const char* what);
  // Throws on every rank when `text` differs from rank 0's (e.g. the resolved config), naming `what`.
  void require_same(const std::string& text, const char* what);

  // ---- gradients
  // Sets rank 0's parameters and buffers on every rank and builds the gradient buckets and hooks over the model's
  // parameters. Call again whenever the parameters are replaced (structured pruning).
  void attach(Model& model);
  // Rank 0's floating-point buffers on every rank (before each forward).
  void sync_buffers(Model& model);
  // Around one backward pass: `share` is this rank's rows / the global batch's rows. finish_backward launches the
  // buckets not launched yet, waits for all and leaves in every parameter's .grad() the weighted sum over ranks
  // (the gradient of the global batch's mean loss). A parameter no rank used keeps its .grad() as it was.
  void begin_backward(double share);
  void finish_backward();

  // Communication statistics of the training steps so far (for summary.json).
  nlohmann::json stats() const;

 private:
  struct Impl;
  DistSpec spec_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cerebra
