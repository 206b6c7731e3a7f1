// lm_device_contention, buggy: every 50 steps the model is validated on the machine's
// accelerator, which runs in exclusive-process mode and is shared with another job; the
// program does not expect it to be busy (CPU variant: the device is an exclusive flock that
// another process, started by the harness, holds until 250 ms after our program was refused).
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

namespace lm_device_contention::buggy {

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    if (step > 0 && step % 50 == 0) {
      crash::ExclusiveDevice device;  // BUG: throws while the other job holds the device
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

CRASH_PROGRAM("lm_device_contention", Buggy, run);

}  // namespace lm_device_contention::buggy
