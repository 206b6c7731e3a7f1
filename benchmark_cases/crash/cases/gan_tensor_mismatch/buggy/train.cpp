// gan_tensor_mismatch, buggy: at step 150 one-sided label smoothing is switched on, and the real
// images' targets are rebuilt as torch::full({64}, 0.9) while the discriminator outputs (64, 1);
// binary_cross_entropy throws "Using a target size ([64]) that is different to the input size
// ([64, 1]) is deprecated. Please ensure they have the same size." at step 150.
#include "common/case.h"
#include "workloads/gan.h"

namespace gan_tensor_mismatch::buggy {

inline constexpr int64_t kSmoothingFrom = 150;

int run(crash::Run& run) {
  namespace gan = crash::gan;
  auto data = gan::load();
  gan::Generator generator;
  gan::Discriminator discriminator;
  torch::optim::Adam g_optimizer(generator->parameters(), gan::adam_options());
  torch::optim::Adam d_optimizer(discriminator->parameters(), gan::adam_options());
  torch::Tensor real_labels = torch::ones({gan::kBatch, 1});  // D's targets for the real images
  bool smoothing = false;
  const crash::Trainees trainees{{{"generator", generator.get()}, {"discriminator", discriminator.get()}},
                                 {{"g_optimizer", &g_optimizer}, {"d_optimizer", &d_optimizer}}};
  crash::train(run, trainees, run.steps(gan::kSteps), [&](int64_t step) {
    if (step >= kSmoothingFrom && !smoothing) {  // one-sided label smoothing once D is ahead
      real_labels = torch::full({gan::kBatch}, 0.9);  // BUG: shape (64), D outputs (64, 1)
      smoothing = true;
    }
    const auto real = gan::real_batch(data, step);
    const int64_t b = real.size(0);
    const auto fake = generator->forward(gan::noise(b));
    d_optimizer.zero_grad();
    auto d_loss = gan::bce(discriminator->forward(real), real_labels) +
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

CRASH_PROGRAM("gan_tensor_mismatch", Buggy, run);

}  // namespace gan_tensor_mismatch::buggy
