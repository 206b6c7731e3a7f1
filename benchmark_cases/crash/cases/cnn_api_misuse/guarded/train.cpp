// cnn_api_misuse, guarded: the buggy program under DAIFU_GUARD; the tensor the metric is
// computed from passes through session.transform("batch_correct", ...), the point a hot patch
// can attach to (a compiled C++ function cannot be rewritten in place). No built-in surgery
// knows this fix: the hot patch next to this file (patch.cpp) converts it to float. The
// failure comes after the update, so the step is rolled back and re-run.
#include "common/case.h"
#include "workloads/cnn.h"

namespace cnn_api_misuse::guarded {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  daifu::Session session(run.options());
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, run.steps(crash::cnn::kSteps)) {
    const auto batch = crash::cnn::batch(data, step.index());
    optimizer.zero_grad();
    const auto output = net->forward(batch.images);
    auto loss = torch::nll_loss(output, batch.labels);
    loss.backward();
    optimizer.step();
    if ((step.index() + 1) % 50 == 0) {
      const auto correct = session.transform("batch_correct", output.argmax(1).eq(batch.labels));
      run.result()["batch_accuracy"][std::to_string(step.index())] = correct.mean().item<double>();  // BUG
    }
    session.report("loss", loss.item<double>());
  };
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_api_misuse", Guarded, run);

}  // namespace cnn_api_misuse::guarded
