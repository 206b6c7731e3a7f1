// lm_transient_runtime, guarded: the buggy program under DAIFU_GUARD. Repaired by the built-in
// transient_retry surgery: the step is retried at once and its upload tried again (the upload
// comes before the update, so nothing is restored).
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

namespace lm_transient_runtime::guarded {

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  crash::FlakyStorage storage("storage", /*p=*/0.2, /*seed=*/56);
  daifu::Session session(run.options());
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, run.steps(crash::lm::kSteps)) {
    if (step.index() > 0 && step.index() % 20 == 0) {  // the model after `step` steps
      storage.put("model_" + std::to_string(step.index()) + ".pt", crash::lm::serialize(net));  // BUG: one failure ends the run
    }
    const auto [input, target] = crash::lm::batch(data, step.index());
    optimizer.zero_grad();
    auto loss = crash::lm::loss(std::get<0>(net->forward(input)), target);
    loss.backward();
    optimizer.step();
    session.report("loss", loss.item<double>());
  };
  run.finish("bits_per_char", crash::lm::bits_per_char(net, data.corpus), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("lm_transient_runtime", Guarded, run);

}  // namespace lm_transient_runtime::guarded
