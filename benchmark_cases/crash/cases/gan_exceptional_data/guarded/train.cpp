// gan_exceptional_data, guarded: the buggy program under DAIFU_GUARD, the batch fetched with
// Step::once. Repaired by the built-in exceptional_data surgery: every augmented (NaN) batch is
// skipped (the loss fails before backward(), so nothing is rolled back).
#include "common/case.h"
#include "workloads/gan.h"

#include <random>

namespace gan_exceptional_data::guarded {

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
  daifu::Session session(run.options());
  session.track("generator", *generator);
  session.track("discriminator", *discriminator);
  session.track("g_optimizer", g_optimizer);
  session.track("d_optimizer", d_optimizer);
  DAIFU_GUARD(session, current, 0, run.steps(gan::kSteps)) {
    const int64_t step = current.index();
    const auto& real = current.once("batch", [&] {
      auto x = gan::real_batch(data, step);
      const double gamma = augmentation_gamma(step);
      if (gamma != 1.0) x = x.pow(gamma);  // BUG: pixels in [-1, 1]; a negative one to a fractional power is NaN
      return x;
    });
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
    session.report("loss", loss);
  };
  run.finish("frechet_distance", gan::frechet_distance(generator, data), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("gan_exceptional_data", Guarded, run);

}  // namespace gan_exceptional_data::guarded
