// lm_transient_runtime, fixed: a failed upload is tried again, up to 5 times.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

#include <system_error>

namespace lm_transient_runtime::fixed {

void upload(crash::FlakyStorage& storage, const std::string& name, const std::string& bytes) {  // FIX
  for (int attempt = 1;; ++attempt) {
    try {
      storage.put(name, bytes);
      return;
    } catch (const std::system_error&) {
      if (attempt == 5) throw;
    }
  }
}

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::FlakyStorage storage("storage", /*p=*/0.2, /*seed=*/56);
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    if (step > 0 && step % 20 == 0) {  // the model after `step` steps
      upload(storage, "model_" + std::to_string(step) + ".pt", crash::lm::serialize(net));  // FIX
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

CRASH_PROGRAM("lm_transient_runtime", Fixed, run);

}  // namespace lm_transient_runtime::fixed
