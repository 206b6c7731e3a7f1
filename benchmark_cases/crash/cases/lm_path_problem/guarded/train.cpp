// lm_path_problem, guarded: the buggy program under DAIFU_GUARD. Repaired by the built-in
// path_problem surgery: it creates samples/ (inside the working directory) and retries the
// step; the sample is written before the update, so nothing is restored.
#include "common/case.h"
#include "workloads/lm.h"

#include <cerrno>
#include <fstream>
#include <system_error>

namespace lm_path_problem::guarded {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) throw std::system_error(errno, std::generic_category(), "cannot open \"" + path + "\"");
  out << text;
}

int run(crash::Run& run) {
  auto data = crash::lm::load();
  crash::lm::Net net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::lm::kLearningRate));
  daifu::Session session(run.options());
  session.track("model", *net);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, run.steps(crash::lm::kSteps)) {
    if (step.index() > 0 && step.index() % 80 == 0) {  // what the model writes after `step` steps
      const std::string text = crash::lm::sample(net, "Q:", 300, static_cast<uint64_t>(step.index()));
      write_text("samples/step_" + std::to_string(step.index()) + ".txt", text);  // BUG: samples/ does not exist
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

CRASH_PROGRAM("lm_path_problem", Guarded, run);

}  // namespace lm_path_problem::guarded
