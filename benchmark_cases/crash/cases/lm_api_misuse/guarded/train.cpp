// lm_api_misuse, guarded: the buggy program under DAIFU_GUARD, the carried hidden state routed
// through session.transform("carried_hidden", ...). No built-in surgery repairs a wrong call
// (api_misuse escalates); the hot patch guarded/patch.cpp, in the workplace from the start,
// registers that transform as detach() and the step is retried (the failure comes in
// backward(), before the update, so nothing is restored).
#include "common/case.h"
#include "workloads/lm.h"

namespace lm_api_misuse::guarded {

inline constexpr int64_t kCarryFrom = 80;

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  daifu::Session session(run.options());
  session.track("model", *net);
  session.track("optimizer", optimizer);
  at::Tensor hidden;  // the last hidden state of the previous chunk
  DAIFU_GUARD(session, step, 0, run.steps(crash::lm::kSteps)) {
    const auto [input, target] = crash::lm::stream_batch(data, step.index());
    const at::Tensor h0 = step.index() >= kCarryFrom && hidden.defined()
                              ? session.transform("carried_hidden", hidden)  // BUG: not detached
                              : at::Tensor();
    optimizer.zero_grad();
    auto [logits, last] = net->forward(input, h0);
    auto loss = crash::lm::loss(logits, target);
    loss.backward();
    optimizer.step();
    hidden = last;
    session.report("loss", loss.item<double>());
  };
  run.finish("bits_per_char", crash::lm::bits_per_char(net, data.corpus), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("lm_api_misuse", Guarded, run);

}  // namespace lm_api_misuse::guarded
