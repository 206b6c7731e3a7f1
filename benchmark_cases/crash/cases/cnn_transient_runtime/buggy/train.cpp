// cnn_transient_runtime, buggy: every 25 steps the model is uploaded to shared storage whose
// writes fail now and then (crash::FlakyStorage: 20% of them, seeded, as in seed 000's example);
// the first failed upload ends the run: std::system_error "storage: writing ...: Input/output error".
#include "common/case.h"
#include "common/environment.h"
#include "workloads/cnn.h"

#include <sstream>

namespace cnn_transient_runtime::buggy {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::FlakyStorage storage("storage", /*p=*/0.2, /*seed=*/10);
  crash::train(run, trainees, run.steps(crash::cnn::kSteps), [&](int64_t step) {
    const auto batch = crash::cnn::batch(data, step);
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    if ((step + 1) % 25 == 0) {
      std::ostringstream bytes;
      torch::save(net, bytes);
      storage.put("model_" + std::to_string(step + 1) + ".pt", bytes.str());  // BUG: one failure ends the run
    }
    return loss.item<double>();
  });
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_transient_runtime", Buggy, run);

}  // namespace cnn_transient_runtime::buggy
