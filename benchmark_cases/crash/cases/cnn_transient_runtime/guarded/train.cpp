// cnn_transient_runtime, guarded: the buggy program under DAIFU_GUARD, its upload (after the
// update) in Step::after_update. Repaired by the built-in transient_retry surgery: the upload
// alone is tried again; the step is not rolled back and re-run.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/cnn.h"

#include <sstream>

namespace cnn_transient_runtime::guarded {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  crash::FlakyStorage storage("storage", /*p=*/0.2, /*seed=*/10);
  daifu::Session session(run.options());
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, run.steps(crash::cnn::kSteps)) {
    const auto batch = crash::cnn::batch(data, step.index());
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    if ((step.index() + 1) % 25 == 0) {
      step.after_update([&] {
        std::ostringstream bytes;
        torch::save(net, bytes);
        storage.put("model_" + std::to_string(step.index() + 1) + ".pt", bytes.str());  // BUG: one failure ends the run
      });
    }
    session.report("loss", loss.item<double>());
  };
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_transient_runtime", Guarded, run);

}  // namespace cnn_transient_runtime::guarded
