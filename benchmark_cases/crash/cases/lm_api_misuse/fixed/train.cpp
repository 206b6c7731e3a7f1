// lm_api_misuse, fixed: the carried hidden state is detached from the previous chunk's graph
// (truncated backpropagation through time: gradients stop at the chunk boundary).
#include "common/case.h"
#include "workloads/lm.h"

namespace lm_api_misuse::fixed {

inline constexpr int64_t kCarryFrom = 80;

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  at::Tensor hidden;  // the last hidden state of the previous chunk
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    const auto [input, target] = crash::lm::stream_batch(data, step);
    const at::Tensor h0 = step >= kCarryFrom && hidden.defined() ? hidden.detach() : at::Tensor();  // FIX
    optimizer.zero_grad();
    auto [logits, last] = net->forward(input, h0);
    auto loss = crash::lm::loss(logits, target);
    loss.backward();
    optimizer.step();
    hidden = last;
    return loss.item<double>();
  });
  run.finish("bits_per_char", crash::lm::bits_per_char(net, data.corpus), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("lm_api_misuse", Fixed, run);

}  // namespace lm_api_misuse::fixed
