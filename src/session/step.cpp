#include <daifu/step.h>

#include "session/session_impl.h"

#include <ATen/core/Tensor.h>

namespace daifu {

void Step::before_update() {
  if (session_ == nullptr) return;
  session_->detectors.before_update();
  if (session_->agreement) session_->agreement->update_point();
}

at::Tensor Step::probe(const std::string& name, const at::Tensor& x) {
  return session_ == nullptr ? x : session_->injector.probe(name, x);
}

}  // namespace daifu
