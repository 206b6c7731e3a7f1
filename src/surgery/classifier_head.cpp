#include "surgery/classifier_head.h"

#include <daifu/errors.h>
#include <daifu/surgery.h>

#include "compat/optimizer_key.h"
#include "core/tensor_description.h"
#include "repair/repair_services.h"
#include "state/tracked_state.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/optimizer.h>

#include <utility>

namespace daifu::detail {
namespace {

struct Found {
  std::string name;
  torch::nn::LinearImpl* linear = nullptr;
};

Found find_head(const TrackedState& state) {
  Found found;
  for (const auto& o : state.objects()) {
    if (o.module == nullptr) continue;
    if (auto* self = dynamic_cast<torch::nn::LinearImpl*>(o.module)) found = {o.name, self};
    // Not include_self: the tracked module need not be owned by a shared_ptr.
    for (const auto& item : o.module->named_modules("", /*include_self=*/false)) {
      if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(item.value().get())) found = {o.name + "." + item.key(), linear};
    }
  }
  return found;
}

// Rows [0, old.size(0)) from `old`, the others from `fresh`, in old's dtype and device.
at::Tensor widened(const at::Tensor& old, const at::Tensor& fresh) {
  at::Tensor out = fresh.detach().to(old.device(), old.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
  out.narrow(0, 0, old.size(0)).copy_(old.detach());
  return out;
}

}  // namespace

std::optional<ClassifierHead> classifier_head(const TrackedState& state) {
  const Found found = find_head(state);
  if (found.linear == nullptr) return std::nullopt;
  return ClassifierHead{found.name, found.linear->options.in_features(), found.linear->options.out_features()};
}

void widen_classifier_head(RepairServices& session, int64_t classes, RepairContext& context) {
  TrackedState& state = session.state();
  const Found head = find_head(state);
  if (head.linear == nullptr) throw Error("daifu: no torch::nn::Linear among the tracked modules");
  torch::nn::LinearImpl& linear = *head.linear;
  const int64_t in = linear.options.in_features();
  const int64_t out = linear.options.out_features();
  if (classes <= out) {
    throw Error("daifu: the head " + head.name + " has " + std::to_string(out) + " outputs; cannot widen it to " +
                std::to_string(classes));
  }
  c10::NoGradGuard no_grad;
  // When the failed attempt had modified tracked state, the loop restored the snapshot before
  // this surgery ran and re-runs the steps since it: that snapshot is retaken below with the
  // new shapes so the next restore fits.
  const bool rolled_back = !state.mutated_since_begin().empty();

  const std::string weight_before = describe_tensor(linear.weight);
  const std::string bias_before = linear.bias.defined() ? describe_tensor(linear.bias) : "";
  torch::nn::Linear fresh(torch::nn::LinearOptions(in, classes).bias(linear.bias.defined()));
  linear.weight.set_data(widened(linear.weight, fresh->weight));
  linear.weight.mutable_grad().reset();
  context.note(head.name + ".weight", weight_before, describe_tensor(linear.weight));
  if (linear.bias.defined()) {
    linear.bias.set_data(widened(linear.bias, fresh->bias));
    linear.bias.mutable_grad().reset();
    context.note(head.name + ".bias", bias_before, describe_tensor(linear.bias));
  }
  linear.options.out_features(classes);
  context.note(head.name + ".out_features", std::to_string(out), std::to_string(classes));

  // Optimizer state is keyed by TensorImpl address, which set_data() keeps: the old entries
  // would be found and applied with the old shape.
  for (const auto& o : state.objects()) {
    if (o.optimizer == nullptr) continue;
    auto& entries = o.optimizer->state();
    for (const at::Tensor* param : {&linear.weight, &linear.bias}) {
      if (!param->defined()) continue;
      if (entries.erase(detail::optimizer_state_key(*param)) > 0) {
        context.note(o.name + ".state[" + head.name + (param == &linear.weight ? ".weight" : ".bias") + "]",
                     "\"kept\"", "\"erased\"");
      }
    }
  }

  session.keep_changes(/*retake_step_snapshot=*/rolled_back);
}

}  // namespace daifu::detail
