// lm_out_of_memory, buggy: every 50 steps the model is validated on the whole held-out slice
// (2013 windows of 64 characters) in one forward pass: no gradients, so "it fits". It does not
// on a device with 300 MiB free (simulated: the address space is capped at its size plus
// 300 MiB, so the allocation failure is real): the GRU alone asks for its input projection of
// every time step at once, 64 x 2013 x 384 floats (198 MB), and the outputs and logits follow.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/lm.h"

namespace lm_out_of_memory::buggy {

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::cap_memory(/*free_mib=*/300);
  const int64_t eval_batch = crash::lm::heldout_windows(data.corpus);  // BUG: the whole held-out slice at once
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

CRASH_PROGRAM("lm_out_of_memory", Buggy, run);

}  // namespace lm_out_of_memory::buggy
