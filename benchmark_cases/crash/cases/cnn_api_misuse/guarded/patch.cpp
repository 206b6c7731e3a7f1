// The hot patch of cnn_api_misuse: the metric's booleans become floats before the mean.
// Built with daifu_add_patch; the harness puts it in the guarded run's workplace/patches/.
#include <daifu/patch.h>
#include <torch/torch.h>

namespace {

daifu::Action float_correct(daifu::PatchContext& ctx) {
  ctx.add_transform("batch_correct", [](const at::Tensor& t) { return t.to(torch::kFloat); });
  ctx.repair().explain("batch_correct: bool -> float before mean()");
  return daifu::Action::Retry;
}

}  // namespace

DAIFU_PATCH(float_correct)
