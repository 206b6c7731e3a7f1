// The Fashion-MNIST classifier of the example and the overhead benchmark: two 5x5
// convolutions with max pooling, then two linear layers. Returns log-probabilities.
#pragma once

#include "fashion_mnist_data.h"

#include <torch/torch.h>

#include <algorithm>

namespace fashion_mnist {

struct FashionNetImpl : torch::nn::Module {
  FashionNetImpl()
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 5).padding(2)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 5).padding(2)))),
        fc1(register_module("fc1", torch::nn::Linear(32 * 7 * 7, 128))),
        fc2(register_module("fc2", torch::nn::Linear(128, 10))) {}

  /// x: [N, 1, 28, 28] -> [N, 10]
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);  // [N, 16, 14, 14]
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);  // [N, 32, 7, 7]
    x = torch::relu(fc1(x.flatten(1)));
    return torch::log_softmax(fc2(x), 1);
  }

  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(FashionNet);

/// The share of `test` the model classifies right (in eval mode; training mode is put back).
inline double test_accuracy(FashionNet& model, const Dataset& test) {
  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Device device = model->parameters().front().device();
  int64_t correct = 0;
  for (int64_t first = 0; first < test.size(); first += 1000) {
    const int64_t n = std::min<int64_t>(1000, test.size() - first);
    const auto predicted = model->forward(test.images.narrow(0, first, n).to(device)).argmax(1);
    correct += predicted.eq(test.labels.narrow(0, first, n).to(device)).sum().item<int64_t>();
  }
  model->train();
  return static_cast<double>(correct) / static_cast<double>(test.size());
}

}  // namespace fashion_mnist
