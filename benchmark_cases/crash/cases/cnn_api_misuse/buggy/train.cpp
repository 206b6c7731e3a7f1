// cnn_api_misuse, buggy: every 50 steps the batch accuracy is logged as the mean of a boolean
// tensor; libtorch's mean() refuses integral and boolean input: "mean(): could not infer output
// dtype. Input dtype must be either a floating point or complex dtype. Got: Bool".
#include "common/case.h"
#include "workloads/cnn.h"

namespace cnn_api_misuse::buggy {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::train(run, trainees, run.steps(crash::cnn::kSteps), [&](int64_t step) {
    const auto batch = crash::cnn::batch(data, step);
    optimizer.zero_grad();
    const auto output = net->forward(batch.images);
    auto loss = torch::nll_loss(output, batch.labels);
    loss.backward();
    optimizer.step();
    if ((step + 1) % 50 == 0) {
      const auto correct = output.argmax(1).eq(batch.labels);
      run.result()["batch_accuracy"][std::to_string(step)] = correct.mean().item<double>();  // BUG
    }
    return loss.item<double>();
  });
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_api_misuse", Buggy, run);

}  // namespace cnn_api_misuse::buggy
