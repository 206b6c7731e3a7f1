// lm_transient_runtime, buggy: every 20 steps the model is uploaded to shared storage whose
// writes fail now and then (simulated as in seed 000: each write fails with probability 0.2,
// seeded), and a failed upload ends the run: std::system_error "storage: writing
// storage/model_80.pt: Input/output error".
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

namespace lm_transient_runtime::buggy {

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::FlakyStorage storage("storage", /*p=*/0.2, /*seed=*/56);
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    if (step > 0 && step % 20 == 0) {  // the model after `step` steps
      storage.put("model_" + std::to_string(step) + ".pt", crash::lm::serialize(net));  // BUG: one failure ends the run
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

CRASH_PROGRAM("lm_transient_runtime", Buggy, run);

}  // namespace lm_transient_runtime::buggy
