// cnn_path_problem, fixed: the export folder is created before training.
#include "common/case.h"
#include "workloads/cnn.h"

#include <filesystem>

namespace cnn_path_problem::fixed {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  std::filesystem::create_directories("runs/exp1");  // FIX
  crash::train(run, trainees, run.steps(crash::cnn::kSteps), [&](int64_t step) {
    const auto batch = crash::cnn::batch(data, step);
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    if ((step + 1) % 150 == 0) torch::save(net, "runs/exp1/model_" + std::to_string(step + 1) + ".pt");
    return loss.item<double>();
  });
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_path_problem", Fixed, run);

}  // namespace cnn_path_problem::fixed
