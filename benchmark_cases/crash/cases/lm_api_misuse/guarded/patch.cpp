// The hot patch of lm_api_misuse: the hidden state carried into the next chunk is detached
// from the previous chunk's graph (truncated backpropagation through time).
// Built with daifu_add_patch; the harness puts it in the guarded run's workplace/patches/.
#include <daifu/patch.h>
#include <torch/torch.h>

namespace {

daifu::Action detach_carried_hidden(daifu::PatchContext& ctx) {
  if (ctx.failure().message.find("backward through the graph a second time") == std::string::npos) {
    return daifu::Action::Decline;
  }
  ctx.add_transform("carried_hidden", [](const at::Tensor& h) { return h.detach(); });
  ctx.repair().explain("carried_hidden: detach() the hidden state carried from the previous chunk");
  return daifu::Action::Retry;
}

}  // namespace

DAIFU_PATCH(detach_carried_hidden)
