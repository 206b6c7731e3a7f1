#include "surgery/numeric_fault.h"

#include <daifu/step.h>

#include "journal/events.h"
#include "journal/journal.h"
#include "repair/repair_services.h"
#include "surgery/non_finite.h"

namespace daifu::detail {

NumericFaultSurgery::NumericFaultSurgery(SurgeryLimits limits, RepairServices& session)
    : Surgery("numeric_fault", limits), session_(session) {}

bool NumericFaultSurgery::matches(const Failure& failure) const {
  return failure.kind == FailureKind::NumericFault && !program_found_non_finite(failure);
}

Action NumericFaultSurgery::operate(RepairContext& context) {
  const Failure& f = context.failure();
  const std::string& detector = f.detector;
  const std::string signature = f.exception_type + " " + f.matched_by + (detector.empty() ? "" : " " + detector);
  const std::string step = std::to_string(f.step);
  if (last_ && last_->where == f.where && last_->step == f.step && last_->signature == signature) {
    session_.journal().write({{"event", event::persistent_fault}, {"step", f.step}, {"attempt", f.attempt},
                              {"detector", detector}, {"signature", signature}});
    session_.journal().record("Step " + step + " faulted the same way after re-execution: a persistent fault");
    context.explain("persistent: step " + step + " faulted the same way again after re-execution (" + signature + ")");
    return Action::Decline;
  }
  last_ = Seen{f.where, f.step, signature};
  context.explain("taken for a transient fault (" + signature + "): step " + step + " is re-executed");
  return Action::Retry;
}

}  // namespace daifu::detail
