// gan_exceptional_data, fixed: the gamma is applied to the pixels in [0, 1], then rescaled.
#include "common/case.h"
#include "workloads/gan.h"

#include <random>

namespace gan_exceptional_data::fixed {

// Contrast augmentation of the real images: on about 1% of the batches (a draw seeded by the
// step), a random gamma in [0.7, 1.3]; 1 (no change) on the others.
double augmentation_gamma(int64_t step) {
  std::mt19937_64 random(4'000'012 + static_cast<uint64_t>(step));
  std::uniform_real_distribution<double> uniform(0, 1);
  if (uniform(random) >= 0.01) return 1.0;
  return 0.7 + 0.6 * uniform(random);
}

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
    auto real = gan::real_batch(data, step);
    const double gamma = augmentation_gamma(step);
    if (gamma != 1.0) real = real.add(1).div(2).pow(gamma).mul(2).sub(1);  // FIX: on the [0, 1] pixels
    const int64_t b = real.size(0);
    const auto fake = generator->forward(gan::noise(b));
    d_optimizer.zero_grad();
    auto d_loss = gan::bce(discriminator->forward(real), torch::ones({b, 1})) +
                  gan::bce(discriminator->forward(fake.detach()), torch::zeros({b, 1}));
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

CRASH_PROGRAM("gan_exceptional_data", Fixed, run);

}  // namespace gan_exceptional_data::fixed
