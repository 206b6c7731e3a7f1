// A guarded training run with persistent snapshots, for the kill test: it resumes from the
// workplace's newest snapshot, trains to the last step and saves the final parameters.
// Usage: kill_target WORKPLACE STEPS OUT_FILE
#include <daifu/daifu.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: kill_target WORKPLACE STEPS OUT_FILE\n";
    return 2;
  }
  const int64_t steps = std::atoll(argv[2]);
  torch::manual_seed(5);
  torch::nn::Sequential net(torch::nn::Linear(16, 256), torch::nn::ReLU(), torch::nn::Dropout(0.25),
                            torch::nn::Linear(256, 256), torch::nn::ReLU(), torch::nn::Linear(256, 4));
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(1e-3));
  const auto x = torch::randn({256, 16});
  const auto y = torch::randint(0, 4, {256});

  daifu::Session session(
      daifu::Options().workplace(argv[1]).persist(true).resume(true).snapshot_every(5).inject(""));
  session.track("model", *net);
  session.track("optimizer", optimizer);
  auto& lr = session.knob("lr", 1e-3);
  DAIFU_GUARD(session, step, 0, steps) {
    const auto rows = torch::arange(step.index() * 32, step.index() * 32 + 32) % 256;
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x.index_select(0, rows)), y.index_select(0, rows));
    loss.backward();
    optimizer.step();
    if (step.index() == steps / 2) lr.set(5e-4, "halfway");
    for (auto& group : optimizer.param_groups()) group.options().set_lr(lr.get());
    std::cout << step.index() << std::endl;  // progress, read by the kill test
  };
  std::vector<torch::Tensor> params;
  for (const auto& p : net->parameters()) params.push_back(p.detach().clone());
  torch::save(params, argv[3]);
  return 0;
}
