// Built-in surgery "tensor_mismatch": adapters that each know one real libtorch 1.13 error
// message and answer it by adapting the batch the step memoized with Step::once (or, for a
// classifier head too narrow for its classes, by widening the head). The surgery matches a
// tensor_mismatch failure only when an adapter knows its message; an adapter that finds no
// memoized tensor fitting its message declines (Action::Decline, with the reason). Each repair
// notes the tensors' shapes and dtypes before and after, and retries the step.
// The messages and the changes: docs/surgeries.md#tensor_mismatch.
#pragma once

#include <daifu/surgery.h>

namespace daifu::detail {

class RepairServices;

class TensorMismatchSurgery final : public Surgery {
 public:
  TensorMismatchSurgery(SurgeryLimits limits, RepairServices& session);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  RepairServices& session_;
};

}  // namespace daifu::detail
