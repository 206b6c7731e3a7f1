// Built-in surgery "exceptional_data": a step that failed on NaN or Inf values — an
// exceptional_data failure (e.g. daifu::check_finite), a numeric_fault whose message names
// nan/inf/non-finite values (a program's "loss is NaN", anomaly mode's "Function
// 'SqrtBackward0' returned nan values in its 0th output."), or a detector's numeric_fault once
// the numeric_fault surgery found it persistent — is skipped or has its batch scrubbed, as the
// string knob "data_policy" says:
//   "skip" (also when the knob does not exist): Action::Skip, the step's batch is abandoned;
//   "scrub": NaN -> 0 and +-Inf -> the tensor's largest/smallest finite value in every floating
//            tensor the step memoized with Step::once, floating inputs cast to the model's
//            dtype, then Action::Retry; a batch with nothing to scrub (the non-finite value
//            arose in the computation) is skipped instead;
//   anything else: Action::Escalate, naming the accepted values.
// Tracked state the failed attempt modified (non-finite weights after optimizer.step()) is
// rolled back by the guard loop before the retry or skip.
#pragma once

#include <daifu/surgery.h>

namespace daifu::detail {

class RepairServices;

class ExceptionalDataSurgery final : public Surgery {
 public:
  ExceptionalDataSurgery(SurgeryLimits limits, RepairServices& session);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  Action skip(RepairContext& context, const std::string& why);
  Action scrub(RepairContext& context);

  RepairServices& session_;
  int64_t skipped_ = 0;  // batches this surgery skipped
};

}  // namespace daifu::detail
