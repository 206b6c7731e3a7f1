#include <daifu/inject.h>
#include <daifu/step.h>

#include "journal/events.h"
#include "session/session_impl.h"
#include "session/step_loop.h"
#include "surgery/batch_tensors.h"

#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>

#include <limits>

namespace daifu {

void Step::before_update() {
  if (session_ == nullptr) return;
  session_->detectors.before_update();
  if (session_->agreement) session_->agreement->update_point();
}

void Step::run_after_update(void (*call)(void*), void* fn) {
  for (int64_t tries = 0;; ++tries) {
    const int64_t stamp = session_->state.version_stamp();
    try {
      call(fn);
      return;
    } catch (...) {
      if (session_->running_loop == nullptr || !session_->running_loop->repair_after_update(*this, tries, stamp)) throw;
    }
  }
}

at::Tensor Step::probe(const std::string& name, const at::Tensor& x) {
  return session_ == nullptr ? x : session_->injector.probe(name, x);
}

// An armed nan_data fault puts a NaN into the first element of the batch's input (a copy: the
// caller's tensors, perhaps its whole dataset, are not touched), so the program's own checks,
// the detectors and the data surgeries meet it as they would meet a real one.
void Step::memoized() {
  if (session_->armed_fault != "nan_data") return;
  for (const detail::BatchTensor& b : detail::batch_tensors(*this)) {
    at::Tensor& t = *b.tensor;
    if (b.role == detail::BatchRole::Target || !c10::isFloatingType(t.scalar_type()) || t.numel() == 0) continue;
    c10::NoGradGuard no_grad;
    at::Tensor poisoned = t.detach().clone(at::MemoryFormat::Contiguous);
    poisoned.view({-1})[0].fill_(std::numeric_limits<double>::quiet_NaN());
    t = poisoned;
    session_->armed_fault.reset();
    session_->journal.write({{"event", detail::event::injected}, {"step", index_}, {"attempt", attempt_},
                             {"model", "nan_data"}, {"target", "batch"}, {"where", b.name}, {"elements", 1}});
    return;
  }
}

void Step::entering_micro_batches() {
  if (session_->armed_fault != "oom") return;
  session_->armed_fault.reset();
  throw_injected("oom", (session_->workplace / "inject").string());
}

}  // namespace daifu
