// Quickstart: a small MLP on synthetic data, trained under DAIFU_GUARD.
// Try a fault: DAIFU_INJECT="transient@50" ./quickstart
#include <daifu/daifu.h>
#include <torch/torch.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  const auto inputs = torch::randn({4096, 16});
  const auto labels = (inputs.sum(1) > 0).to(torch::kLong);
  torch::nn::Sequential model(torch::nn::Linear(16, 64), torch::nn::ReLU(), torch::nn::Linear(64, 2),
                              torch::nn::LogSoftmax(1));
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));

  daifu::Session session(daifu::Options().workplace("daifu_workplace"));
  session.track("model", *model);
  session.track("optimizer", optimizer);
  auto& batch = session.knob<int64_t>("batch_size", 64);

  DAIFU_GUARD(session, step, 0, 300) {
    const auto rows = torch::arange(step.index() * batch.get(), (step.index() + 1) * batch.get()) % 4096;
    optimizer.zero_grad();
    auto loss = torch::nll_loss(model->forward(inputs.index_select(0, rows)), labels.index_select(0, rows));
    loss.backward();
    optimizer.step();
    session.report("loss", loss.item<double>());
  };
  std::cout << session.summary();
}
