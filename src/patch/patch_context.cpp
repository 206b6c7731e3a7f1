#include <daifu/patch.h>
#include <daifu/session.h>

#include "compat/optimizer_key.h"
#include "core/tensor_description.h"
#include "repair/repair_services.h"
#include "state/tracked_state.h"

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <unordered_map>

namespace daifu {
namespace {

const detail::TrackedObject* tracked(RepairContext& context, const std::string& name) {
  for (const auto& o : detail::services(context).state().objects()) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

// {"weight": {"shape": [10, 128], "dtype": "Float"}, ...} as JSON text.
std::string describe_parameters(torch::nn::Module& module) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    out[p.key()] = detail::tensor_description(p.value());
  }
  return out.dump();
}

}  // namespace

struct PatchContext::Replacement {
  std::string name;  // model.path
  torch::nn::Module* target = nullptr;
  std::vector<at::Tensor> old_params;
  std::string before;
  bool rolled_back = false;
};

PatchContext::~PatchContext() {
  // The assignment of a replace_module() threw: whatever it changed is no longer what the
  // session watches, and the version stamp says so.
  if (replacing_) detail::services(repair_).state().refresh();
}

torch::nn::Module* PatchContext::module(const std::string& name) {
  const auto* o = tracked(repair_, name);
  return o != nullptr ? o->module : nullptr;
}

torch::optim::Optimizer* PatchContext::optimizer(const std::string& name) {
  const auto* o = tracked(repair_, name);
  return o != nullptr ? o->optimizer : nullptr;
}

at::Tensor* PatchContext::tensor(const std::string& name) {
  const auto* o = tracked(repair_, name);
  return o != nullptr ? o->tensor : nullptr;
}

torch::nn::Module* PatchContext::begin_replace(const std::string& model, const std::string& path,
                                               const std::type_info& type, bool have_replacement) {
  torch::nn::Module* root = module(model);
  if (root == nullptr) throw Error("daifu: replace_module: no tracked module named \"" + model + "\"");
  if (!have_replacement) throw Error("daifu: replace_module(\"" + model + "\", \"" + path + "\") got a null module");
  torch::nn::Module* target = nullptr;
  std::string names;
  // Not include_self: the tracked module need not be owned by a shared_ptr.
  for (const auto& item : root->named_modules("", /*include_self=*/false)) {
    if (item.key() == path) target = item.value().get();
    names += (names.empty() ? "" : ", ") + item.key();
  }
  if (target == nullptr) {
    throw Error("daifu: replace_module: \"" + model + "\" has no submodule \"" + path + "\" (it has: " +
                (names.empty() ? "none" : names) + ")");
  }
  if (typeid(*target) != type) {
    throw Error("daifu: replace_module: " + model + "." + path + " is a " + target->name() +
                "; it can be replaced in place only by a module of the same type");
  }
  auto r = std::make_shared<Replacement>();
  r->name = model + "." + path;
  r->target = target;
  r->old_params = target->parameters(/*recurse=*/true);
  r->before = describe_parameters(*target);
  // After a rollback the state is the snapshot's: that snapshot is retaken with the new layout.
  r->rolled_back = !detail::services(repair_).state().mutated_since_begin().empty();
  replacing_ = std::move(r);
  return target;
}

void PatchContext::end_replace() {
  const std::shared_ptr<Replacement> r = std::move(replacing_);
  detail::TrackedState& state = detail::services(repair_).state();
  std::unordered_map<detail::OptimizerStateKey, at::Tensor> replaced;  // old TensorImpl -> new parameter
  const auto fresh = r->target->parameters(/*recurse=*/true);
  for (std::size_t i = 0; i < r->old_params.size(); ++i) {
    replaced[detail::optimizer_state_key(r->old_params[i])] = i < fresh.size() ? fresh[i] : at::Tensor();
  }
  for (const auto& o : state.objects()) {
    if (o.optimizer == nullptr) continue;
    int64_t swapped = 0;
    for (auto& group : o.optimizer->param_groups()) {
      auto& params = group.params();
      std::vector<at::Tensor> kept;
      for (const auto& p : params) {
        auto it = replaced.find(detail::optimizer_state_key(p));
        if (it == replaced.end()) {
          kept.push_back(p);
          continue;
        }
        ++swapped;
        o.optimizer->state().erase(it->first);
        if (it->second.defined()) kept.push_back(it->second);
      }
      // Parameters the replacement has beyond the old ones go to the group that held the first.
      if (swapped > 0 && fresh.size() > r->old_params.size()) {
        kept.insert(kept.end(), fresh.begin() + static_cast<std::ptrdiff_t>(r->old_params.size()), fresh.end());
      }
      params = std::move(kept);
      if (swapped > 0) break;
    }
    if (swapped > 0) {
      repair_.note(o.name + ".params[" + r->name + "]", std::to_string(swapped), std::to_string(fresh.size()));
    }
  }
  state.refresh();
  repair_.note(r->name, r->before, describe_parameters(*r->target));
  detail::services(repair_).keep_changes(/*retake_step_snapshot=*/r->rolled_back);
}

void PatchContext::set_learning_rate(const std::string& name, double lr) {
  torch::optim::Optimizer* opt = optimizer(name);
  if (opt == nullptr) throw Error("daifu: set_learning_rate: no tracked optimizer named \"" + name + "\"");
  if (!(lr > 0) || !std::isfinite(lr)) {
    throw Error("daifu: set_learning_rate(\"" + name + "\", " + std::to_string(lr) + "): not a positive number");
  }
  for (std::size_t g = 0; g < opt->param_groups().size(); ++g) {
    auto& options = opt->param_groups()[g].options();
    const double before = options.get_lr();
    options.set_lr(lr);
    repair_.note(name + ".param_groups[" + std::to_string(g) + "].lr", nlohmann::json(before).dump(),
                 nlohmann::json(lr).dump());
  }
  detail::services(repair_).keep_changes(/*retake_step_snapshot=*/false);
}

void PatchContext::add_transform(const std::string& name, std::function<at::Tensor(const at::Tensor&)> fn) {
  session().add_transform(name, std::move(fn));
}

}  // namespace daifu
