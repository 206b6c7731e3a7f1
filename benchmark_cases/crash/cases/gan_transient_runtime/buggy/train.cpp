// gan_transient_runtime, buggy: every 100 steps the generator is uploaded to an artifact store
// whose operations fail now and then; the first failure, std::system_error "storage: writing
// storage/generator_200.pt: Input/output error" (EIO) at step 200, ends the run.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/gan.h"

#include <sstream>

namespace gan_transient_runtime::buggy {

// The generator's weights as torch::save writes them.
std::string serialized(crash::gan::Generator& generator) {
  std::ostringstream out;
  torch::save(generator, out);
  return out.str();
}

int run(crash::Run& run) {
  namespace gan = crash::gan;
  auto data = gan::load();
  gan::Generator generator;
  gan::Discriminator discriminator;
  torch::optim::Adam g_optimizer(generator->parameters(), gan::adam_options());
  torch::optim::Adam d_optimizer(discriminator->parameters(), gan::adam_options());
  // The artifact store: each operation fails with probability 0.2 (EIO), from a seeded generator.
  crash::FlakyStorage storage("storage", /*p=*/0.2, /*seed=*/15);
  const crash::Trainees trainees{{{"generator", generator.get()}, {"discriminator", discriminator.get()}},
                                 {{"g_optimizer", &g_optimizer}, {"d_optimizer", &d_optimizer}}};
  crash::train(run, trainees, run.steps(gan::kSteps), [&](int64_t step) {
    if (step > 0 && step % 100 == 0) storage.put("generator_" + std::to_string(step) + ".pt", serialized(generator));  // BUG: one try
    const auto real = gan::real_batch(data, step);
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

CRASH_PROGRAM("gan_transient_runtime", Buggy, run);

}  // namespace gan_transient_runtime::buggy
