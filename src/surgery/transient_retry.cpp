#include "surgery/transient_retry.h"

#include "surgery/backoff.h"

namespace daifu::detail {

TransientRetry::TransientRetry(SurgeryLimits limits, std::chrono::microseconds first_backoff,
                               std::chrono::microseconds max_backoff)
    : Surgery("transient_retry", limits),
      first_backoff_(first_backoff),
      max_backoff_(max_backoff),
      jitter_(std::random_device{}()) {}

bool TransientRetry::matches(const Failure& failure) const { return failure.kind == FailureKind::TransientRuntime; }

Action TransientRetry::operate(RepairContext& context) {
  // The first retry is immediate (most transient errors are gone by then); later ones back off.
  if (context.fired_this_step() == 0) return Action::Retry;
  context.wait(jittered_backoff(first_backoff_, context.fired_this_step() - 1, max_backoff_, jitter_));
  return Action::Retry;
}

}  // namespace daifu::detail
