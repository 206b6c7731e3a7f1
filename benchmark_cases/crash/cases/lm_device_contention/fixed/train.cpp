// lm_device_contention, fixed: a busy device is waited for (tried every 50 ms, at most 60 s),
// as one does with a GPU shared in exclusive-process mode.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>

namespace lm_device_contention::fixed {

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
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    if (step > 0 && step % 50 == 0) {
      std::optional<crash::ExclusiveDevice> device;
      acquire(device);  // FIX
      run.result()["validation"][std::to_string(step)] = crash::lm::bits_per_char(net, data.corpus);
    }
    const auto [input, target] = crash::lm::batch(data, step);
    optimizer.zero_grad();
    auto loss = crash::lm::loss(std::get<0>(net->forward(input)), target);
    loss.backward();
    optimizer.step();
    return loss.item<double>();
  });
  run.finish("bits_per_char", crash::lm::bits_per_char(net, data.corpus), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("lm_device_contention", Fixed, run);

}  // namespace lm_device_contention::fixed
