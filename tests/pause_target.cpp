// A training program with a curriculum bug, for the pause test: its classifier head is built
// for the 5 classes of the first phase, and at step 60 the data switches to all 10 classes, so
// nll_loss throws "Target 7 is out of bounds" (a real c10::IndexError). The built-in tensor
// adapters are told not to fix it; the session pauses until a hot patch widens the head.
// Usage: pause_target WORKPLACE RESULT_JSON [--fixed]   (--fixed: a 10-class head from the start)
#include <daifu/daifu.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <map>

#include <unistd.h>

namespace {

constexpr int64_t kSteps = 200, kPhaseOne = 60, kClasses = 10, kFeatures = 20, kBatch = 64;

struct Net : torch::nn::Module {
  explicit Net(int64_t classes)
      : fc1(register_module("fc1", torch::nn::Linear(kFeatures, 64))),
        fc2(register_module("fc2", torch::nn::Linear(64, classes))) {}
  torch::Tensor forward(const torch::Tensor& x) { return torch::log_softmax(fc2(torch::relu(fc1(x))), 1); }
  torch::nn::Linear fc1, fc2;
};

// Ten Gaussian clusters; `classes` limits the labels drawn.
std::pair<torch::Tensor, torch::Tensor> draw(const torch::Tensor& centers, int64_t n, int64_t classes,
                                            torch::Generator& gen) {
  auto y = torch::randint(0, classes, {n}, gen, torch::kLong);
  auto x = centers.index_select(0, y) + torch::randn({n, kFeatures}, gen) * 2.0;
  return {x, y};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: pause_target WORKPLACE RESULT_JSON [--fixed]\n";
    return 2;
  }
  const bool fixed = argc > 3 && std::string(argv[3]) == "--fixed";
  torch::manual_seed(3);
  auto gen = at::detail::createCPUGenerator(11);
  const auto centers = torch::randn({kClasses, kFeatures}) * 1.5;
  auto net = std::make_shared<Net>(fixed ? kClasses : 5);  // the bug: 5 = the classes of phase one
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));

  daifu::Session session(daifu::Options()
                             .workplace(argv[1])
                             .on_unrecovered(daifu::OnUnrecovered::Pause)
                             .pause_timeout(std::chrono::seconds(240))
                             .inject(""));
  // Told not to fix the head, nor to drop the batch it fails on: a person decides.
  session.surgeries().remove("tensor_mismatch");
  session.surgeries().remove("data_or_code");
  session.track("model", *net);
  session.track("optimizer", optimizer);
  session.knob("lr", 0.05);
  std::map<int64_t, int> runs;  // body executions per step index
  DAIFU_GUARD(session, step, 0, kSteps) {
    ++runs[step.index()];
    auto& batch = step.once("batch", [&] { return draw(centers, kBatch, step.index() < kPhaseOne ? 5 : kClasses, gen); });
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.first), session.transform("targets", batch.second));
    loss.backward();
    optimizer.step();
    session.report("loss", loss.item<double>());
  };

  torch::NoGradGuard no_grad;
  auto test_gen = at::detail::createCPUGenerator(99);
  const auto [x, y] = draw(centers, 2000, kClasses, test_gen);
  const double accuracy = net->forward(x).argmax(1).eq(y).to(torch::kDouble).mean().item<double>();
  nlohmann::json repeated = nlohmann::json::array();
  for (const auto& [index, count] : runs) {
    if (count > 1) repeated.push_back({index, count});
  }
  nlohmann::json result = {{"pid", static_cast<int64_t>(::getpid())},
                           {"accuracy", accuracy},
                           {"global_step", session.global_step()},
                           {"committed_steps", session.stats().committed_steps},
                           {"distinct_steps", static_cast<int64_t>(runs.size())},
                           {"repeated", repeated},
                           {"head_outputs", net->fc2->options.out_features()}};
  std::ofstream(argv[2]) << result.dump() << "\n";
  std::cout << result.dump() << std::endl;
  return 0;
}
