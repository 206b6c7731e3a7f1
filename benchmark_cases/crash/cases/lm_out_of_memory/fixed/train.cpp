// lm_out_of_memory, fixed: the held-out slice is validated 512 windows at a time.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

namespace lm_out_of_memory::fixed {

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::cap_memory(/*free_mib=*/300);
  const int64_t eval_batch = crash::lm::kEvalBatch;  // FIX
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    if (step > 0 && step % 50 == 0) {
      run.result()["validation"][std::to_string(step)] = crash::lm::bits_per_char(net, data.corpus, eval_batch);
    }
    const auto [input, target] = crash::lm::batch(data, step);
    optimizer.zero_grad();
    auto loss = crash::lm::loss(std::get<0>(net->forward(input)), target);
    loss.backward();
    optimizer.step();
    return loss.item<double>();
  });
  run.finish("bits_per_char", crash::lm::bits_per_char(net, data.corpus), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("lm_out_of_memory", Fixed, run);

}  // namespace lm_out_of_memory::fixed
