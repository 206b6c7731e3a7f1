// lm_exceptional_data, buggy: trains on one fortune per row (its first 65 bytes, padded), the
// loss of each row normalized by its number of non-padding targets. The corpus holds four
// empty fortunes (a "%" line right after another, or at the top of a file): such a row has
// no target, its loss is 0 / 0 = NaN, and so is the batch's; the program's own check stops
// it with "loss is NaN at step 61" (the first empty fortune in this data order).
#include "common/case.h"
#include "workloads/lm.h"

#include <cmath>
#include <stdexcept>

namespace lm_exceptional_data::buggy {

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
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    const auto [input, target] = crash::lm::entry_batch(data.corpus, fortunes, step);
    optimizer.zero_grad();
    auto loss = per_fortune_loss(std::get<0>(net->forward(input)), target);
    const double value = loss.item<double>();
    if (!std::isfinite(value)) throw std::runtime_error("loss is NaN at step " + std::to_string(step));
    loss.backward();
    optimizer.step();
    return value;
  });
  run.finish("bits_per_char", crash::lm::bits_per_char(net, data.corpus), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("lm_exceptional_data", Buggy, run);

}  // namespace lm_exceptional_data::buggy
