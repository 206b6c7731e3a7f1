// The hot patch for pause_target: widens the classifier head fc2 from 5 to 10 classes, keeping
// the rows it has learned, and retries the step. Built at test time with `daifu patch build`.
#include <daifu/patch.h>
#include <torch/torch.h>

namespace {

daifu::Action widen_head(daifu::PatchContext& ctx) {
  torch::nn::Module* model = ctx.module("model");
  if (model == nullptr) return daifu::Action::Decline;
  auto& old = *model->named_children()["fc2"]->as<torch::nn::Linear>();
  const int64_t have = old.options.out_features();
  torch::nn::Linear head(torch::nn::LinearOptions(old.options.in_features(), 10));
  {
    torch::NoGradGuard no_grad;
    head->weight.narrow(0, 0, have).copy_(old.weight);
    head->bias.narrow(0, 0, have).copy_(old.bias);
  }
  ctx.replace_module("model", "fc2", head.ptr());
  ctx.repair().explain("widen_head: fc2 " + std::to_string(have) + " -> 10 classes");
  return daifu::Action::Retry;
}

}  // namespace

DAIFU_PATCH(widen_head)
