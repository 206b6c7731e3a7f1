// lm_tensor_mismatch, fixed: the in-domain token ids are converted to int64 where they are loaded.
#include "common/case.h"
#include "workloads/lm.h"

#include <fstream>
#include <iterator>

namespace lm_tensor_mismatch::fixed {

inline constexpr int64_t kDomainFrom = 80;
inline constexpr int64_t kDomainEvery = 60;

/// The in-domain corpus as int32 token ids.
at::Tensor domain_tokens() {
  std::vector<int32_t> ids;
  for (const char* name : {"debian", "linux", "linuxcookie"}) {
    std::ifstream in(std::string(crash::lm::kFortunesDir) + "/" + name, std::ios::binary);
    for (auto it = std::istreambuf_iterator<char>(in); it != std::istreambuf_iterator<char>(); ++it) {
      ids.push_back(static_cast<uint8_t>(*it));
    }
  }
  return torch::tensor(ids, torch::kInt).to(torch::kLong);  // FIX
}

int run(crash::Run& run) {
  auto data = crash::lm::load();
  const at::Tensor domain = domain_tokens();
  crash::lm::Sampler domain_windows((domain.size(0) - 1) / crash::lm::kSeq, crash::lm::kBatch, /*seed=*/2);
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  auto batch = [&](int64_t step) {
    if (step < kDomainFrom || (step - kDomainFrom) % kDomainEvery != 0) return crash::lm::batch(data, step);
    auto firsts = domain_windows.items((step - kDomainFrom) / kDomainEvery, crash::lm::kBatch);
    for (auto& k : firsts) k *= crash::lm::kSeq;
    return crash::lm::windows(domain, firsts);
  };
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    const auto [input, target] = batch(step);
    optimizer.zero_grad();
    auto loss = crash::lm::loss(std::get<0>(net->forward(input)), target);
    loss.backward();
    optimizer.step();
    return loss.item<double>();
  });
  run.finish("bits_per_char", crash::lm::bits_per_char(net, data.corpus), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("lm_tensor_mismatch", Fixed, run);

}  // namespace lm_tensor_mismatch::fixed
