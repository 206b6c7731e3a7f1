// cnn_out_of_memory, guarded: the buggy program under DAIFU_GUARD, its validation batch a knob
// (Options::batch_knob("eval_batch")). Repaired by the built-in out_of_memory surgery: it
// halves "eval_batch" 10000 -> 5000 -> 2500 and the step is retried (validation comes before
// the update, so nothing is restored); later validations run at 2500.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/cnn.h"

namespace cnn_out_of_memory::guarded {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  crash::cnn::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  crash::cap_memory(/*free_mib=*/400);
  daifu::Session session(run.options().batch_knob("eval_batch"));
  session.track("model", *net);
  session.track("optimizer", optimizer);
  auto& eval_batch = session.knob<int64_t>("eval_batch", data.test.size()).min(100);  // BUG: the whole test set
  DAIFU_GUARD(session, step, 0, run.steps(crash::cnn::kSteps)) {
    if (step.index() > 0 && step.index() % 100 == 0) {
      run.result()["validation"][std::to_string(step.index())] = crash::cnn::accuracy(net, data.test, eval_batch.get());
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

CRASH_PROGRAM("cnn_out_of_memory", Guarded, run);

}  // namespace cnn_out_of_memory::guarded
