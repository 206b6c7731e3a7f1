// A good patch: divides the "lr" knob by 10, notes the tracked model's parameter count, retries.
#include <daifu/patch.h>
#include <daifu/session.h>

#include <torch/nn/module.h>

namespace {

daifu::Action lower_lr(daifu::PatchContext& context) {
  auto* lr = context.session().find_knob<double>("lr");
  torch::nn::Module* model = context.module("model");
  if (lr == nullptr || model == nullptr || context.optimizer("model") != nullptr) return daifu::Action::Decline;
  lr->set(lr->get() / 10, "hot patch lower_lr");
  context.repair().note("model_parameters", "null", std::to_string(model->parameters().size()));
  context.repair().explain("lower_lr: lr divided by 10");
  return daifu::Action::Retry;
}

}  // namespace

DAIFU_PATCH(lower_lr)
