// When to take a snapshot: every k steps, k fixed by the user or chosen so that capturing
// costs at most a budget fraction of training time (k = capture time / (budget * step time)).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace daifu::detail {

class SnapshotPolicy {
 public:
  /// `fixed_every` > 0 pins k; 0 chooses it automatically, within [1, max_every].
  SnapshotPolicy(int64_t fixed_every, double budget, int64_t max_every)
      : fixed_every_(fixed_every), budget_(budget), max_every_(std::max<int64_t>(1, max_every)) {}

  void record_step(double seconds) { step_seconds_ = average(step_seconds_, seconds); }
  void record_capture(double seconds) { capture_seconds_ = average(capture_seconds_, seconds); }

  int64_t every() const {
    if (fixed_every_ > 0) return fixed_every_;
    if (step_seconds_ <= 0 || capture_seconds_ <= 0) return 1;
    const double k = std::ceil(capture_seconds_ / (budget_ * step_seconds_));
    return static_cast<int64_t>(std::clamp(k, 1.0, static_cast<double>(max_every_)));
  }
  double step_seconds() const { return step_seconds_; }
  double capture_seconds() const { return capture_seconds_; }

 private:
  // An exponential moving average that starts at the first sample.
  static double average(double current, double sample) { return current <= 0 ? sample : 0.9 * current + 0.1 * sample; }

  int64_t fixed_every_;
  double budget_;
  int64_t max_every_;
  double step_seconds_ = 0;
  double capture_seconds_ = 0;
};

}  // namespace daifu::detail
