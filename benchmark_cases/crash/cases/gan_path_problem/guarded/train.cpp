// gan_path_problem, guarded: the buggy program under DAIFU_GUARD. Repaired by the built-in
// path_problem surgery: it creates runs/gan (inside the working directory) and the step is run
// again (the export comes before the step's updates, so nothing is rolled back).
#include "common/case.h"
#include "workloads/gan.h"

namespace gan_path_problem::guarded {

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
    if (step > 0 && step % 250 == 0) torch::save(generator, "runs/gan/generator_" + std::to_string(step) + ".pt");  // BUG
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
    session.report("loss", loss);
  };
  run.finish("frechet_distance", gan::frechet_distance(generator, data), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("gan_path_problem", Guarded, run);

}  // namespace gan_path_problem::guarded
