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

namespace detail {

void StepMemos::for_each(Step& step,
                         const std::function<void(const std::string&, const std::type_info&, void*)>& fn) {
  for (auto& [key, memo] : step.memo_) fn(key, *memo.type, memo.value.get());
}

}  // namespace detail
}  // namespace daifu
