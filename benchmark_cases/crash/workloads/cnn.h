// Workload 1: a CNN on Fashion-MNIST (Debian's dataset-fashion-mnist), Adam, batches of 64.
// Quality: accuracy on the 10,000 test images.
#pragma once

#include "fashion_mnist_data.h"
#include "probe.h"

#include <torch/torch.h>

namespace crash::cnn {

inline constexpr int64_t kSteps = 400;
inline constexpr int64_t kBatch = 64;
inline constexpr double kLearningRate = 1e-3;

/// Two 5x5 convolutions with max pooling, two linear layers; log-probabilities over `classes`.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(int64_t classes = 10);
  /// [N, 1, 28, 28] -> [N, classes]; `probe` sees "input", "conv1.out", "conv2.out", "fc1.out",
  /// "fc2.out".
  torch::Tensor forward(torch::Tensor x, const crash::Probe& probe = {});

  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Net);

struct Data {
  fashion_mnist::Dataset train;
  fashion_mnist::Dataset test;
  fashion_mnist::Sampler sampler;
};

/// Reads the data set and seeds libtorch (torch::manual_seed(1)), so that models built next
/// start from the same weights in every variant.
Data load();

/// The first `size` samples of step `step` (a fixed permutation per epoch).
fashion_mnist::Batch batch(Data& data, int64_t step, int64_t size = kBatch);

/// Accuracy of `net` on `test`, evaluated `eval_batch` images at a time.
double accuracy(Net& net, const fashion_mnist::Dataset& test, int64_t eval_batch = 1000);

}  // namespace crash::cnn
