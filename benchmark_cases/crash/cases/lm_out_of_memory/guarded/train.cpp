// lm_out_of_memory, guarded: the buggy program under DAIFU_GUARD, its validation batch a knob
// (Options::batch_knob("eval_batch")). Repaired by the built-in out_of_memory surgery: it
// halves "eval_batch" (2013 -> 1006 -> ...) until the validation fits, the step retried each
// time (validation comes before the update, so nothing is restored); later validations run
// at the smaller batch.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

namespace lm_out_of_memory::guarded {

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  crash::cap_memory(/*free_mib=*/300);
  daifu::Session session(run.options().batch_knob("eval_batch"));
  session.track("model", *net);
  session.track("optimizer", optimizer);
  auto& eval_batch = session.knob<int64_t>("eval_batch", crash::lm::heldout_windows(data.corpus)).min(16);  // BUG: the whole held-out slice at once
  DAIFU_GUARD(session, step, 0, run.steps(crash::lm::kSteps)) {
    if (step.index() > 0 && step.index() % 50 == 0) {
      run.result()["validation"][std::to_string(step.index())] =
          crash::lm::bits_per_char(net, data.corpus, eval_batch.get());
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

CRASH_PROGRAM("lm_out_of_memory", Guarded, run);

}  // namespace lm_out_of_memory::guarded
