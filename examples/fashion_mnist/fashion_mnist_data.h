// Fashion-MNIST for the examples and benchmarks: the gzip'ed MNIST idx files Debian ships in
// `dataset-fashion-mnist`, and a sampler that maps a global step index to its batch.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace fashion_mnist {

inline constexpr const char* kDefaultDir = "/usr/share/datasets/fashion-mnist";

/// One split of the data set, held in memory.
struct Dataset {
  at::Tensor images;  ///< [N, 1, 28, 28] float32, normalized with the training set's mean/std
  at::Tensor labels;  ///< [N] int64 in [0, 10)
  int64_t size() const { return labels.size(0); }
};

/// Reads `<dir>/<split>-images-idx3-ubyte.gz` and `<dir>/<split>-labels-idx1-ubyte.gz`;
/// `split` is "train" or "t10k". Throws std::runtime_error naming the file on any problem.
Dataset load(const std::string& dir, const std::string& split);

/// A fixed-seed permutation per epoch. The samples of a global step depend only on the step
/// index, so a step that is run again trains on the same samples.
///
/// Example:
///   Sampler sampler(train.size(), 64, /*seed=*/1);
///   at::Tensor rows = sampler.indices(step, 64);   // rows of step `step`
class Sampler {
 public:
  /// `batch_size` is the nominal batch: it fixes steps_per_epoch() (the last partial batch
  /// of an epoch is dropped).
  Sampler(int64_t dataset_size, int64_t batch_size, uint64_t seed);

  int64_t steps_per_epoch() const noexcept { return steps_per_epoch_; }
  int64_t batch_size() const noexcept { return batch_size_; }

  /// The rows of global step `step` (int64 tensor). A `batch_size` below the nominal one takes
  /// a prefix of the step's samples, so the step still sees only its own samples.
  at::Tensor indices(int64_t step, int64_t batch_size);

 private:
  int64_t dataset_size_;
  int64_t batch_size_;
  int64_t steps_per_epoch_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  at::Tensor permutation_;
};

struct Batch {
  at::Tensor images;
  at::Tensor labels;
};

/// The rows `indices` of `data`.
Batch gather(const Dataset& data, const at::Tensor& indices);

}  // namespace fashion_mnist
