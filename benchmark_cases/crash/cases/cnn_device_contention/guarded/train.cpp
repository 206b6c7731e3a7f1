// cnn_device_contention, guarded: the buggy program under DAIFU_GUARD. Repaired by the
// built-in device_contention surgery: it waits with backoff (100 ms, 200 ms, ... +-50%), polling
// the device with Options::device_probe, and retries the step as soon as the other job lets go
// (validation comes before the update).
#include "common/case.h"
#include "common/environment.h"
#include "workloads/cnn.h"

namespace cnn_device_contention::guarded {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  daifu::Session session(run.options().device_probe(crash::device_free));
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, run.steps(crash::cnn::kSteps)) {
    if (step.index() > 0 && step.index() % 100 == 0) {
      crash::ExclusiveDevice device;  // BUG: a busy device ends the run
      run.result()["validation"][std::to_string(step.index())] = crash::cnn::accuracy(net, data.test);
    }
    const auto batch = crash::cnn::batch(data, step.index());
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    session.report("loss", loss.item<double>());
  };
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_device_contention", Guarded, run);

}  // namespace cnn_device_contention::guarded
