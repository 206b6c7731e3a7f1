// cnn_device_contention, buggy: every 100 steps the model is validated on a shared accelerator
// in exclusive-process mode (simulated: crash::ExclusiveDevice). Another job holds it at step
// 100, and opening it throws "CUDA error: all CUDA-capable devices are busy or unavailable".
#include "common/case.h"
#include "common/environment.h"
#include "workloads/cnn.h"

namespace cnn_device_contention::buggy {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::train(run, trainees, run.steps(crash::cnn::kSteps), [&](int64_t step) {
    if (step > 0 && step % 100 == 0) {
      crash::ExclusiveDevice device;  // BUG: a busy device ends the run
      run.result()["validation"][std::to_string(step)] = crash::cnn::accuracy(net, data.test);
    }
    const auto batch = crash::cnn::batch(data, step);
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    return loss.item<double>();
  });
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_device_contention", Buggy, run);

}  // namespace cnn_device_contention::buggy
