// A robust running statistic for spike detection: the median and the median absolute
// deviation (MAD) of one value per committed step, over the last N steps.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>

namespace daifu::detail {

class RobustWindow {
 public:
  static constexpr int64_t kWarmupBoundFrom = 3;

  explicit RobustWindow(int64_t size) : size_(size) {}

  /// Records the value of committed step `step`; a step run again after a rollback replaces
  /// its earlier value. Non-finite values are not recorded.
  void add(int64_t step, double value);
  int64_t count() const noexcept { return static_cast<int64_t>(values_.size()); }

  /// Forgets every value.
  void clear() noexcept {
    values_.clear();
    smallest_.reset();
  }

  struct Spike {
    double value, median, mad;
    /// Judged in the warm-up: `median` is then the largest |value| recorded so far.
    bool warmup = false;
  };
  /// The spike, if `value` exceeds the median by more than (ratio - 1) * |median| and by more
  /// than mads * MAD, with at least `warmup` values recorded. A window whose median and MAD
  /// are both 0 judges nothing (no scale to compare with). With `bound_warmup`, a window with
  /// kWarmupBoundFrom to warmup - 1 values judges `value` against the largest |value| recorded:
  /// a spike if above ratio times it (a quantity that grows by the ratio within the warm-up,
  /// like a parameter's magnitude, is not a healthy one).
  std::optional<Spike> spike(double value, double ratio, double mads, int64_t warmup, bool bound_warmup = false) const;

 private:
  /// The smallest value recorded (at least one is); cached, and kept by add() unless the value
  /// it drops or replaces was the smallest.
  double smallest() const;

  int64_t size_;
  std::deque<std::pair<int64_t, double>> values_;  // (step, value), ordered by step
  mutable std::optional<double> smallest_;
};

}  // namespace daifu::detail
