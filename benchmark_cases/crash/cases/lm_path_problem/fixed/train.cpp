// lm_path_problem, fixed: the samples folder is created before training.
#include "common/case.h"
#include "workloads/lm.h"

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <system_error>

namespace lm_path_problem::fixed {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) throw std::system_error(errno, std::generic_category(), "cannot open \"" + path + "\"");
  out << text;
}

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  const crash::Trainees trainees{{{"model", net.get()}}, {{"optimizer", &optimizer}}};
  std::filesystem::create_directories("samples");  // FIX
  crash::train(run, trainees, run.steps(crash::lm::kSteps), [&](int64_t step) {
    if (step > 0 && step % 80 == 0) {  // what the model writes after `step` steps
      const std::string text = crash::lm::sample(net, "Q:", 300, static_cast<uint64_t>(step));
      write_text("samples/step_" + std::to_string(step) + ".txt", text);
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

CRASH_PROGRAM("lm_path_problem", Fixed, run);

}  // namespace lm_path_problem::fixed
