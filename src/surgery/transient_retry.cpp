#include "surgery/transient_retry.h"

#include <algorithm>

namespace daifu::detail {

TransientRetry::TransientRetry(int64_t retries, std::chrono::microseconds first_backoff,
                               std::chrono::microseconds max_backoff)
    : Surgery("transient_retry", SurgeryLimits{/*priority=*/190, /*max_per_step=*/retries, /*max_per_run=*/1'000'000}),
      first_backoff_(first_backoff),
      max_backoff_(max_backoff),
      jitter_(std::random_device{}()) {}

bool TransientRetry::matches(const Failure& failure) const { return failure.kind == FailureKind::TransientRuntime; }

Action TransientRetry::operate(RepairContext& context) {
  // The first retry is immediate (most transient errors are gone by then); later ones back off.
  if (context.fired_this_step() == 0) return Action::Retry;
  const int64_t n = std::min<int64_t>(context.fired_this_step() - 1, 30);
  const double base = std::min<double>(static_cast<double>(first_backoff_.count()) * static_cast<double>(1LL << n),
                                       static_cast<double>(max_backoff_.count()));
  std::uniform_real_distribution<double> factor(0.5, 1.5);
  const auto wait = std::chrono::microseconds(
      std::min<int64_t>(static_cast<int64_t>(base * factor(jitter_)), max_backoff_.count()));
  context.wait(wait);
  return Action::Retry;
}

}  // namespace daifu::detail
