#include "patch/hot_patch_surgery.h"

#include "patch/patch_runner.h"
#include "session/session_impl.h"

namespace daifu::detail {

// After the built-ins that repair, before api_misuse: a patch is how API misuse gets fixed.
HotPatchSurgery::HotPatchSurgery(SessionImpl& impl)
    : Surgery("hot_patch", SurgeryLimits{/*priority=*/198, /*max_per_step=*/3, /*max_per_run=*/1000}), impl_(impl) {}

bool HotPatchSurgery::matches(const Failure& failure) const { return failure.kind != FailureKind::Fatal; }

Action HotPatchSurgery::operate(RepairContext& context) {
  const PatchRunner::Result result = impl_.patches.run_new(context);
  if (result.damaged) {
    context.explain(result.reason + "; not retrying on half-patched state");
    return Action::Escalate;
  }
  if (result.action) return *result.action;
  context.explain(result.reason);
  return Action::Decline;
}

}  // namespace daifu::detail
