// lm_device_contention, guarded: the buggy program under DAIFU_GUARD. Repaired by the built-in
// device_contention surgery: it waits with backoff, polling the device with
// Options::device_probe, and retries the step as soon as the other job lets the device go
// (validation comes before the update, so nothing is restored).
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

namespace lm_device_contention::guarded {

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  daifu::Session session(run.options().device_probe(crash::device_free));
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, run.steps(crash::lm::kSteps)) {
    if (step.index() > 0 && step.index() % 50 == 0) {
      crash::ExclusiveDevice device;  // BUG: throws while the other job holds the device
      run.result()["validation"][std::to_string(step.index())] = crash::lm::bits_per_char(net, data.corpus);
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

CRASH_PROGRAM("lm_device_contention", Guarded, run);

}  // namespace lm_device_contention::guarded
