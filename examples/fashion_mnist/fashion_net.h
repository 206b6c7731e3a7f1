// The Fashion-MNIST classifier of the example and the overhead benchmark: two 5x5
// convolutions with max pooling, then two linear layers. Returns log-probabilities.
#pragma once

#include <torch/torch.h>

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

}  // namespace fashion_mnist
