// gan_device_contention, guarded: the buggy program under DAIFU_GUARD. Repaired by the built-in
// device_contention surgery: it waits (100 ms, doubling, with jitter), polling the device with
// Options::device_probe, and runs the step again as soon as the other process has let go (the
// harness's holder releases the device 250 ms after the first refusal). The sheet comes before the step's updates: nothing is rolled back.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/gan.h"

#include <filesystem>
#include <fstream>

namespace gan_device_contention::guarded {

// The sample sheet of the run: the generator's images of a fixed noise batch, rendered on the
// accelerator (exclusive-process mode: one process at a time) into samples/step_N.pgm.
void write_sample_sheet(crash::gan::Generator& generator, const torch::Tensor& z, int64_t step) {
  torch::NoGradGuard no_grad;
  std::ofstream("samples/step_" + std::to_string(step) + ".pgm", std::ios::binary)
      << crash::gan::pgm_grid(generator->forward(z));
}

int run(crash::Run& run) {
  namespace gan = crash::gan;
  auto data = gan::load();
  gan::Generator generator;
  gan::Discriminator discriminator;
  torch::optim::Adam g_optimizer(generator->parameters(), gan::adam_options());
  torch::optim::Adam d_optimizer(discriminator->parameters(), gan::adam_options());
  const auto sheet_noise = torch::randn({64, gan::kNoise}, at::detail::createCPUGenerator(/*seed_in=*/5));
  std::filesystem::create_directories("samples");
  daifu::Session session(run.options().device_probe(crash::device_free));
  session.track("generator", *generator);
  session.track("discriminator", *discriminator);
  session.track("g_optimizer", g_optimizer);
  session.track("d_optimizer", d_optimizer);
  DAIFU_GUARD(session, current, 0, run.steps(gan::kSteps)) {
    const int64_t step = current.index();
    if (step > 0 && step % 250 == 0) {
      crash::ExclusiveDevice device;  // BUG: the device may be held by another process; no retry
      write_sample_sheet(generator, sheet_noise, step);
    }
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

CRASH_PROGRAM("gan_device_contention", Guarded, run);

}  // namespace gan_device_contention::guarded
