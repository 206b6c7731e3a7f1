// cnn_exceptional_data, buggy: a gamma augmentation (on 3% of the batches) raises the pixels to
// a random power, but it is applied after normalization, where pixels are negative: pow()
// gives NaN, the loss is NaN, and the program's own check stops it ("loss is NaN at step N").
#include "common/case.h"
#include "workloads/cnn.h"

#include <cmath>
#include <random>
#include <stdexcept>

namespace cnn_exceptional_data::buggy {

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
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::train(run, trainees, run.steps(crash::cnn::kSteps), [&](int64_t step) {
    auto batch = crash::cnn::batch(data, step);
    if (const double gamma = gamma_of(step); gamma != 1.0) batch.images = batch.images.pow(gamma);  // BUG
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    const double value = loss.item<double>();
    if (!std::isfinite(value)) throw std::runtime_error("loss is NaN at step " + std::to_string(step));
    loss.backward();
    optimizer.step();
    return value;
  });
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_exceptional_data", Buggy, run);

}  // namespace cnn_exceptional_data::buggy
