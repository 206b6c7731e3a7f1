#include "surgery/numeric_fault.h"

#include <daifu/step.h>

#include "session/session_impl.h"

namespace daifu::detail {
namespace {

// "daifu detector grad_spike: ..." -> "grad_spike"; "" for other messages.
std::string detector_of(const std::string& message) {
  static const std::string prefix = "daifu detector ";
  if (message.compare(0, prefix.size(), prefix) != 0) return "";
  const auto colon = message.find(':', prefix.size());
  return colon == std::string::npos ? "" : message.substr(prefix.size(), colon - prefix.size());
}

}  // namespace

NumericFaultSurgery::NumericFaultSurgery(SessionImpl& impl)
    : Surgery("numeric_fault", SurgeryLimits{/*priority=*/145, /*max_per_step=*/3, /*max_per_run=*/1'000'000}),
      impl_(impl) {}

bool NumericFaultSurgery::matches(const Failure& failure) const { return failure.kind == FailureKind::NumericFault; }

Action NumericFaultSurgery::operate(RepairContext& context) {
  const Failure& f = context.failure();
  const std::string detector = detector_of(f.message);
  const std::string signature = f.exception_type + " " + f.matched_by + (detector.empty() ? "" : " " + detector);
  const std::string step = std::to_string(f.step);
  if (last_ && last_->where == f.where && last_->step == f.step && last_->signature == signature) {
    impl_.journal.write({{"event", "persistent_fault"}, {"step", f.step}, {"attempt", f.attempt},
                         {"detector", detector}, {"signature", signature}});
    impl_.journal.record("Step " + step + " faulted the same way after re-execution: a persistent fault");
    context.explain("persistent: step " + step + " faulted the same way again after re-execution (" + signature + ")");
    return Action::Decline;
  }
  last_ = Seen{f.where, f.step, signature};
  context.explain("taken for a transient fault (" + signature + "): step " + step + " is re-executed");
  return Action::Retry;
}

}  // namespace daifu::detail
