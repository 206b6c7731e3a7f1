// gan_api_misuse's hot patch: the discriminator's loss must not run back through the
// generator. Registers the guarded program's transform "fake_for_d" as detach(), so that
// d_loss.backward() stops at the generated images and g_loss.backward() finds the generator's
// graph intact; the failed step is run again.
#include <daifu/patch.h>
#include <torch/torch.h>

#include <string>

namespace gan_api_misuse::patch {

daifu::Action detach_fake_for_d(daifu::PatchContext& ctx) {
  if (ctx.failure().message.find("backward through the graph a second time") == std::string::npos) {
    return daifu::Action::Decline;  // not the failure this patch was written for
  }
  ctx.add_transform("fake_for_d", [](const at::Tensor& fake) { return fake.detach(); });
  ctx.repair().explain("detach_fake_for_d: the discriminator's loss now sees fake.detach()");
  return daifu::Action::Retry;
}

}  // namespace gan_api_misuse::patch

DAIFU_PATCH(gan_api_misuse::patch::detach_fake_for_d)
