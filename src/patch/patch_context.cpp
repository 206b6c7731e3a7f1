#include <daifu/patch.h>
#include <daifu/session.h>

#include "session/session_impl.h"

namespace daifu {
namespace {

const detail::TrackedObject* tracked(const detail::SessionImpl& impl, const std::string& name) {
  for (const auto& o : impl.state.objects()) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

}  // namespace

torch::nn::Module* PatchContext::module(const std::string& name) {
  const auto* o = tracked(session().impl(), name);
  return o != nullptr ? o->module : nullptr;
}

torch::optim::Optimizer* PatchContext::optimizer(const std::string& name) {
  const auto* o = tracked(session().impl(), name);
  return o != nullptr ? o->optimizer : nullptr;
}

at::Tensor* PatchContext::tensor(const std::string& name) {
  const auto* o = tracked(session().impl(), name);
  return o != nullptr ? o->tensor : nullptr;
}

}  // namespace daifu
