// gan_device_contention, fixed: the device is acquired with a bounded wait (exponential
// backoff), as a program sharing an exclusive-mode accelerator must.
#include "common/case.h"
#include "common/environment.h"
#include "workloads/gan.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <thread>

namespace gan_device_contention::fixed {

// The sample sheet of the run: the generator's images of a fixed noise batch, rendered on the
// accelerator (exclusive-process mode: one process at a time) into samples/step_N.pgm.
void write_sample_sheet(crash::gan::Generator& generator, const torch::Tensor& z, int64_t step) {
  torch::NoGradGuard no_grad;
  std::ofstream("samples/step_" + std::to_string(step) + ".pgm", std::ios::binary)
      << crash::gan::pgm_grid(generator->forward(z));
}

// The device, waiting for another process to let go of it: at most 8 tries, 50 ms doubling.
std::unique_ptr<crash::ExclusiveDevice> acquire_device() {
  for (int attempt = 0;; ++attempt) {
    try {
      return std::make_unique<crash::ExclusiveDevice>();
    } catch (const std::runtime_error&) {
      if (attempt == 7) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(50 << attempt));
    }
  }
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
  const crash::Trainees trainees{{{"generator", generator.get()}, {"discriminator", discriminator.get()}},
                                 {{"g_optimizer", &g_optimizer}, {"d_optimizer", &d_optimizer}}};
  crash::train(run, trainees, run.steps(gan::kSteps), [&](int64_t step) {
    if (step > 0 && step % 250 == 0) {
      const auto device = acquire_device();  // FIX: wait for the device, bounded
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
    return loss;
  });
  run.finish("frechet_distance", gan::frechet_distance(generator, data), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("gan_device_contention", Fixed, run);

}  // namespace gan_device_contention::fixed
