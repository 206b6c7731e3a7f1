// cnn_transient_runtime, fixed: a failed upload is tried again, up to 5 times.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/cnn.h"

#include <sstream>
#include <system_error>

namespace cnn_transient_runtime::fixed {

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
      for (int attempt = 1;; ++attempt) {  // FIX
        try {
          storage.put("model_" + std::to_string(step + 1) + ".pt", bytes.str());
          break;
        } catch (const std::system_error&) {
          if (attempt == 5) throw;
        }
      }
    }
    return loss.item<double>();
  });
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_transient_runtime", Fixed, run);

}  // namespace cnn_transient_runtime::fixed
