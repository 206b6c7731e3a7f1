// lm_exceptional_data, guarded: the buggy program under DAIFU_GUARD. Repaired by the built-in
// exceptional_data surgery: "loss is NaN" is a non-finite numeric fault, found before
// backward(), so the batch is skipped and training goes on with the next step.
#include "common/case.h"
#include "workloads/lm.h"

#include <cmath>
#include <stdexcept>

namespace lm_exceptional_data::guarded {

/// Mean over the rows of each row's mean cross-entropy over its non-padding targets.
at::Tensor per_fortune_loss(const at::Tensor& logits, const at::Tensor& target) {
  const int64_t rows = logits.size(0);
  const at::Tensor nll = torch::nn::functional::cross_entropy(
      logits.reshape({-1, crash::lm::kVocab}), target,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone)).view({rows, -1});
  const at::Tensor mask = target.view({rows, -1}).ne(crash::lm::kPad).to(torch::kFloat);
  const at::Tensor count = mask.sum(1);  // BUG: 0 for an empty fortune
  return ((nll * mask).sum(1) / count).mean();
}

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Sampler fortunes(static_cast<int64_t>(data.corpus.entries.size()), crash::lm::kEntryBatch, /*seed=*/33);
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  daifu::Session session(run.options());
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, run.steps(crash::lm::kSteps)) {
    const auto& [input, target] =
        step.once("batch", [&] { return crash::lm::entry_batch(data.corpus, fortunes, step.index()); });
    optimizer.zero_grad();
    auto loss = per_fortune_loss(std::get<0>(net->forward(input)), target);
    const double value = loss.item<double>();
    if (!std::isfinite(value)) throw std::runtime_error("loss is NaN at step " + std::to_string(step.index()));
    loss.backward();
    optimizer.step();
    session.report("loss", value);
  };
  run.finish("bits_per_char", crash::lm::bits_per_char(net, data.corpus), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("lm_exceptional_data", Guarded, run);

}  // namespace lm_exceptional_data::guarded
