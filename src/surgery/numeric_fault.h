// Built-in surgery "numeric_fault": a numeric_fault failure (a detector's daifu::FaultDetected,
// a singular matrix) is first taken for a transient fault, a flipped bit or a corrupted value,
// and the step is re-executed (the step loop rolls back the tracked state the attempt
// modified). If the same step then faults again the same way (same exception type, rule and
// detector), the fault is persistent: journaled as "persistent_fault" and declined, so that the
// exceptional_data surgery skips or scrubs the batch, or, for a fault it does not take, the
// step escalates. A non-finite value the program itself found ("loss is NaN", anomaly mode's
// "returned nan values": non_finite.h) is not taken: re-executing the same step would find it
// again, and exceptional_data repairs it at once.
#pragma once

#include <daifu/surgery.h>

#include <optional>
#include <string>

namespace daifu::detail {

class RepairServices;

class NumericFaultSurgery final : public Surgery {
 public:
  NumericFaultSurgery(SurgeryLimits limits, RepairServices& session);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  struct Seen {
    std::string where;
    int64_t step;
    std::string signature;
  };
  RepairServices& session_;
  std::optional<Seen> last_;  // the fault this surgery last retried
};

}  // namespace daifu::detail
