// cnn_path_problem, guarded: the buggy program under DAIFU_GUARD, its export (after the update)
// in Step::after_update. Repaired by the built-in path_problem surgery: it creates runs/exp1
// (inside the working directory) and the export alone runs again; the step, whose update had
// already happened, is not rolled back and re-run.
#include "common/case.h"
#include "workloads/cnn.h"

namespace cnn_path_problem::guarded {

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
    auto loss = torch::nll_loss(net->forward(batch.images), batch.labels);
    loss.backward();
    optimizer.step();
    if ((step.index() + 1) % 150 == 0) {
      step.after_update([&] { torch::save(net, "runs/exp1/model_" + std::to_string(step.index() + 1) + ".pt"); });  // BUG
    }
    session.report("loss", loss.item<double>());
  };
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_path_problem", Guarded, run);

}  // namespace cnn_path_problem::guarded
