// gan_api_misuse, buggy: the discriminator's loss on the generated images uses `fake` without
// detach(), so d_loss.backward() also runs back through the generator and frees its graph. While
// the discriminator warms up alone nothing else needs that graph; at step 100, the first
// generator update, g_loss.backward() throws "Trying to backward through the graph a second
// time (or directly access saved tensors after they have already been freed). ..." after the
// discriminator's update.
#include "common/case.h"
#include "workloads/gan.h"

namespace gan_api_misuse::buggy {

int run(crash::Run& run) {
  namespace gan = crash::gan;
  auto data = gan::load();
  gan::Generator generator;
  gan::Discriminator discriminator;
  torch::optim::Adam g_optimizer(generator->parameters(), gan::adam_options());
  torch::optim::Adam d_optimizer(discriminator->parameters(), gan::adam_options());
  const crash::Trainees trainees{{{"generator", generator.get()}, {"discriminator", discriminator.get()}},
                                 {{"g_optimizer", &g_optimizer}, {"d_optimizer", &d_optimizer}}};
  crash::train(run, trainees, run.steps(gan::kSteps), [&](int64_t step) {
    const auto real = gan::real_batch(data, step);
    const int64_t b = real.size(0);
    const auto fake = generator->forward(gan::noise(b));
    d_optimizer.zero_grad();
    auto d_loss = gan::bce(discriminator->forward(real), torch::ones({b, 1})) +
                  gan::bce(discriminator->forward(fake), torch::zeros({b, 1}));  // BUG: not detached
    d_loss.backward();
    d_optimizer.step();
    double loss = d_loss.item<double>();
    if (step >= gan::kWarmupSteps) {
      g_optimizer.zero_grad();
      auto g_loss = gan::bce(discriminator->forward(fake), torch::ones({b, 1}));
      g_loss.backward();
      g_optimizer.step();
      loss += g_loss.item<double>();
    }
    return loss;
  });
  run.finish("frechet_distance", gan::frechet_distance(generator, data), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("gan_api_misuse", Buggy, run);

}  // namespace gan_api_misuse::buggy
