// Built-in surgery "hot_patch": when a step fails and no surgery before it repaired the
// failure, the patches that appeared in <workplace>/patches/ since the last look are run
// (PatchRunner); the first that does not decline decides the step.
#pragma once

#include <daifu/surgery.h>

namespace daifu::detail {

class PatchRunner;

class HotPatchSurgery final : public Surgery {
 public:
  HotPatchSurgery(SurgeryLimits limits, PatchRunner& patches);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  PatchRunner& patches_;
};

}  // namespace daifu::detail
