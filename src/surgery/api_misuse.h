// Built-in surgery: an api_misuse failure (a wrong call into libtorch) is never guessed at. It
// escalates with the call that failed and where, so the report says what to fix.
#pragma once

#include <daifu/surgery.h>

namespace daifu::detail {

class ApiMisuseSurgery final : public Surgery {
 public:
  explicit ApiMisuseSurgery(SurgeryLimits limits);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;
};

}  // namespace daifu::detail
