// cnn_device_contention, fixed: a busy device is waited for (every 50 ms, at most 60 s).
#include "common/case.h"
#include "common/environment.h"
#include "workloads/cnn.h"

#include <optional>
#include <thread>

namespace cnn_device_contention::fixed {

crash::ExclusiveDevice& acquire(std::optional<crash::ExclusiveDevice>& device) {  // FIX
  for (int attempt = 0;; ++attempt) {
    try {
      return device.emplace();
    } catch (const std::runtime_error&) {
      if (attempt == 1200) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::train(run, trainees, run.steps(crash::cnn::kSteps), [&](int64_t step) {
    if (step > 0 && step % 100 == 0) {
      std::optional<crash::ExclusiveDevice> device;
      acquire(device);  // FIX
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

CRASH_PROGRAM("cnn_device_contention", Fixed, run);

}  // namespace cnn_device_contention::fixed
