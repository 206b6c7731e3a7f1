// gan_tensor_mismatch, guarded: the buggy program under DAIFU_GUARD; the targets are step data
// (Step::once under a name with "label"), and the program keeps what the step used. Repaired by
// the built-in tensor_mismatch surgery (adapter target_size): the memoized targets are reshaped
// (64) -> (64, 1) and the step is run again; the loss fails before backward(), so nothing is
// rolled back, and the later steps reuse the reshaped targets.
#include "common/case.h"
#include "workloads/gan.h"

namespace gan_tensor_mismatch::guarded {

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
  daifu::Session session(run.options());
  session.track("generator", *generator);
  session.track("discriminator", *discriminator);
  session.track("g_optimizer", g_optimizer);
  session.track("d_optimizer", d_optimizer);
  DAIFU_GUARD(session, current, 0, run.steps(gan::kSteps)) {
    const int64_t step = current.index();
    if (step >= kSmoothingFrom && !smoothing) {  // one-sided label smoothing once D is ahead
      real_labels = torch::full({gan::kBatch}, 0.9);  // BUG: shape (64), D outputs (64, 1)
      smoothing = true;
    }
    real_labels = current.once("real_labels", [&] { return real_labels; });
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
    session.report("loss", loss);
  };
  run.finish("frechet_distance", gan::frechet_distance(generator, data), /*higher_is_better=*/false);
  return 0;
}

CRASH_PROGRAM("gan_tensor_mismatch", Guarded, run);

}  // namespace gan_tensor_mismatch::guarded
