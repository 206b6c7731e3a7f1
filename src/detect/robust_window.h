// A robust running statistic for spike detection: the median and the median absolute
// deviation (MAD) of one value per committed step, over the last N steps.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace daifu::detail {

class RobustWindow {
 public:
  explicit RobustWindow(int64_t size) : size_(size) {}

  /// Records the value of committed step `step`; a step run again after a rollback replaces
  /// its earlier value. Non-finite values are not recorded.
  void add(int64_t step, double value);
  int64_t count() const noexcept { return static_cast<int64_t>(values_.size()); }

  struct Spike {
    double value, median, mad;
  };
  /// The spike, if `value` exceeds the median by more than (ratio - 1) * |median| and by more
  /// than mads * MAD, with at least `warmup` values recorded. A window whose median and MAD
  /// are both 0 judges nothing (no scale to compare with).
  std::optional<Spike> spike(double value, double ratio, double mads, int64_t warmup) const;

 private:
  int64_t size_;
  std::map<int64_t, double> values_;  // by step
};

}  // namespace daifu::detail
