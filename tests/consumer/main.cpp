// Trains a tiny model under DAIFU_GUARD with one injected transient fault; exits 0 when the
// run finished all steps with exactly one repaired failure.
#include <daifu/daifu.h>
#include <torch/torch.h>

#include <iostream>

int main(int argc, char** argv) {
  torch::manual_seed(0);
  torch::nn::Linear model(4, 2);
  torch::optim::SGD optimizer(model->parameters(), 0.1);
  daifu::Session session(daifu::Options().workplace(argc > 1 ? argv[1] : "daifu_workplace").inject("transient@3"));
  session.track("model", *model);
  session.track("optimizer", optimizer);
  DAIFU_GUARD(session, step, 0, 10) {
    optimizer.zero_grad();
    auto loss = model->forward(torch::ones({8, 4})).pow(2).mean();
    loss.backward();
    optimizer.step();
    session.report("loss", loss.item<double>());
  };
  std::cout << session.summary();
  return session.global_step() == 10 && session.stats().failures == 1 ? 0 : 1;
}
