// cnn_exceptional_data, guarded: the buggy program under DAIFU_GUARD. Repaired by the built-in
// exceptional_data surgery: "loss is NaN" is a non-finite numeric fault, found before
// backward(), so the batch is skipped and training goes on with the next step.
#include "common/case.h"
#include "workloads/cnn.h"

#include <cmath>
#include <random>
#include <stdexcept>

namespace cnn_exceptional_data::guarded {

/// Gamma in [0.7, 1.4] for about 3% of the steps, decided by the step index; 1 otherwise.
double gamma_of(int64_t step) {
  std::mt19937_64 random(static_cast<uint64_t>(step) * 7919 + 11);
  std::uniform_real_distribution<double> u(0, 1);
  return u(random) < 0.03 ? 0.7 + 0.7 * u(random) : 1.0;
}

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  daifu::Session session(run.options());
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, run.steps(crash::cnn::kSteps)) {
    auto batch = crash::cnn::batch(data, step.index());
    if (const double gamma = gamma_of(step.index()); gamma != 1.0) batch.images = batch.images.pow(gamma);  // BUG
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    const double value = loss.item<double>();
    if (!std::isfinite(value)) throw std::runtime_error("loss is NaN at step " + std::to_string(step.index()));
    loss.backward();
    optimizer.step();
    session.report("loss", value);
  };
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_exceptional_data", Guarded, run);

}  // namespace cnn_exceptional_data::guarded
