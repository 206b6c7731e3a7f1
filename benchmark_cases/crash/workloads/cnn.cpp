#include "cnn.h"

#include <algorithm>

namespace crash::cnn {

NetImpl::NetImpl(int64_t classes)
    : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 5).padding(2)))),
      conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 5).padding(2)))),
      fc1(register_module("fc1", torch::nn::Linear(32 * 7 * 7, 128))),
      fc2(register_module("fc2", torch::nn::Linear(128, classes))) {}

torch::Tensor NetImpl::forward(torch::Tensor x, const crash::Probe& probe) {
  const auto point = [&](const char* name, torch::Tensor t) { return probed(probe, name, std::move(t)); };
  x = point("input", std::move(x));
  x = torch::max_pool2d(point("conv1.out", torch::relu(conv1(x))), 2);
  x = torch::max_pool2d(point("conv2.out", torch::relu(conv2(x))), 2);
  x = point("fc1.out", torch::relu(fc1(x.flatten(1))));
  return torch::log_softmax(point("fc2.out", fc2(x)), 1);
}

Data load() {
  torch::manual_seed(1);
  auto train = fashion_mnist::load(fashion_mnist::kDefaultDir, "train");
  auto test = fashion_mnist::load(fashion_mnist::kDefaultDir, "t10k");
  const int64_t n = train.size();
  return Data{std::move(train), std::move(test), fashion_mnist::Sampler(n, kBatch, /*seed=*/1)};
}

fashion_mnist::Batch batch(Data& data, int64_t step, int64_t size) {
  return fashion_mnist::gather(data.train, data.sampler.indices(step, size));
}

double accuracy(Net& net, const fashion_mnist::Dataset& test, int64_t eval_batch) {
  torch::NoGradGuard no_grad;
  net->eval();
  int64_t correct = 0;
  for (int64_t first = 0; first < test.size(); first += eval_batch) {
    const int64_t n = std::min(eval_batch, test.size() - first);
    correct += net->forward(test.images.narrow(0, first, n)).argmax(1).eq(test.labels.narrow(0, first, n)).sum().item<int64_t>();
  }
  net->train();
  return static_cast<double>(correct) / static_cast<double>(test.size());
}

}  // namespace crash::cnn
