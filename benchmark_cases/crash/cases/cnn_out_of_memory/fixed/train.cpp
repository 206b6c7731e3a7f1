// cnn_out_of_memory, fixed: validation runs 1,000 images at a time.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/cnn.h"

namespace cnn_out_of_memory::fixed {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::cap_memory(/*free_mib=*/400);
  const int64_t eval_batch = 1000;  // FIX
  crash::train(run, trainees, run.steps(crash::cnn::kSteps), [&](int64_t step) {
    if (step > 0 && step % 100 == 0) {
      run.result()["validation"][std::to_string(step)] = crash::cnn::accuracy(net, data.test, eval_batch);
    }
    const auto batch = crash::cnn::batch(data, step);
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    return loss.item<double>();
  });
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_out_of_memory", Fixed, run);

}  // namespace cnn_out_of_memory::fixed
