#include "patch/hot_patch_surgery.h"

#include "patch/patch_runner.h"

namespace daifu::detail {

HotPatchSurgery::HotPatchSurgery(SurgeryLimits limits, PatchRunner& patches)
    : Surgery("hot_patch", limits), patches_(patches) {}

bool HotPatchSurgery::matches(const Failure& failure) const { return failure.kind != FailureKind::Fatal; }

Action HotPatchSurgery::operate(RepairContext& context) {
  const PatchRunner::Result result = patches_.run_new(context);
  if (result.damaged) {
    context.explain(result.reason + "; not retrying on half-patched state");
    return Action::Escalate;
  }
  if (result.action) return *result.action;
  context.explain(result.reason);
  return Action::Decline;
}

}  // namespace daifu::detail
