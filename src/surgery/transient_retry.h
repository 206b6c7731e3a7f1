// Built-in surgery: a transient_runtime failure (EAGAIN, a reset connection, an I/O error)
// is retried after an exponential backoff with jitter, a bounded number of times per step.
#pragma once

#include <daifu/surgery.h>

#include <chrono>
#include <random>

namespace daifu::detail {

class TransientRetry final : public Surgery {
 public:
  /// limits.max_per_step retries per step. The first retry is immediate; retry n >= 1 waits
  /// first_backoff * 2^(n-1) with +-50% jitter, at most max_backoff.
  TransientRetry(SurgeryLimits limits, std::chrono::microseconds first_backoff, std::chrono::microseconds max_backoff);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  std::chrono::microseconds first_backoff_;
  std::chrono::microseconds max_backoff_;
  std::minstd_rand jitter_;
};

}  // namespace daifu::detail
