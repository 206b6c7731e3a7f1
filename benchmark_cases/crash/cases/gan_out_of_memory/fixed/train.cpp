// gan_out_of_memory, fixed: the check runs 32 generated images at a time (192 MiB).
#include "common/case.h"
#include "common/environment.h"
#include "workloads/gan.h"

#include <algorithm>
#include <vector>

namespace gan_out_of_memory::fixed {

inline constexpr int64_t kCheckSamples = 128;  // generated images checked
inline constexpr int64_t kReference = 2000;    // training images they are compared with

// Memorization check: the mean distance of each of the generator's images of a fixed noise
// batch to its nearest neighbour among the first kReference training images (a generator that
// copies its training data scores near 0). `chunk` generated images at a time, by broadcasting:
// chunk x kReference x 784 floats (chunk 128: 766 MiB).
double nearest_neighbour_distance(crash::gan::Generator& generator, const torch::Tensor& reference,
                                  const torch::Tensor& z, int64_t chunk) {
  torch::NoGradGuard no_grad;
  const auto fake = generator->forward(z);
  std::vector<torch::Tensor> nearest;
  for (int64_t first = 0; first < fake.size(0); first += chunk) {
    const auto part = fake.narrow(0, first, std::min(chunk, fake.size(0) - first));
    nearest.push_back((part.unsqueeze(1) - reference.unsqueeze(0)).pow_(2).sum(2).amin(1));
  }
  return torch::cat(nearest).sqrt().mean().item<double>();
}

int run(crash::Run& run) {
  namespace gan = crash::gan;
  auto data = gan::load();
  gan::Generator generator;
  gan::Discriminator discriminator;
  torch::optim::Adam g_optimizer(generator->parameters(), gan::adam_options());
  torch::optim::Adam d_optimizer(discriminator->parameters(), gan::adam_options());
  const auto check_noise = torch::randn({kCheckSamples, gan::kNoise}, at::detail::createCPUGenerator(/*seed_in=*/3));
  const auto reference = data.train.narrow(0, 0, kReference);
  crash::cap_memory(/*free_mib=*/640);  // what the device has left for this program
  const int64_t check_chunk = 32;  // FIX: 192 MiB at a time
  const crash::Trainees trainees{{{"generator", generator.get()}, {"discriminator", discriminator.get()}},
                                 {{"g_optimizer", &g_optimizer}, {"d_optimizer", &d_optimizer}}};
  crash::train(run, trainees, run.steps(gan::kSteps), [&](int64_t step) {
    if (step > 0 && step % 400 == 0) {
      run.result()["nn_distance_" + std::to_string(step)] =
          nearest_neighbour_distance(generator, reference, check_noise, check_chunk);
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

CRASH_PROGRAM("gan_out_of_memory", Fixed, run);

}  // namespace gan_out_of_memory::fixed
