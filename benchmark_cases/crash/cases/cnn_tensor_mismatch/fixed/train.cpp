// cnn_tensor_mismatch, fixed: the head has as many outputs as the data set has classes.
#include "common/case.h"
#include "workloads/cnn.h"

namespace cnn_tensor_mismatch::fixed {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  const auto phase_one = torch::nonzero(data.train.labels < 5).flatten();
  fashion_mnist::Sampler phase_one_sampler(phase_one.numel(), crash::cnn::kBatch, /*seed=*/2);
  const int64_t classes = std::get<0>(at::_unique(data.train.labels)).numel();  // FIX
  crash::cnn::Net net(classes);
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::train(run, trainees, run.steps(crash::cnn::kSteps), [&](int64_t step) {
    const auto batch = step < 150 ? fashion_mnist::gather(data.train, phase_one.index_select(
                                                                          0, phase_one_sampler.indices(step, crash::cnn::kBatch)))
                                  : crash::cnn::batch(data, step);
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    return loss.item<double>();
  });
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_tensor_mismatch", Fixed, run);

}  // namespace cnn_tensor_mismatch::fixed
