#include "detect/robust_window.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace daifu::detail {
namespace {

double median_of(std::vector<double>& v) {
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

}  // namespace

void RobustWindow::add(int64_t step, double value) {
  if (!std::isfinite(value)) return;
  // A value that leaves the window as the smallest one makes the cache stale.
  const auto dropped = [this](double old) {
    if (smallest_ && old <= *smallest_) smallest_.reset();
  };
  if (values_.empty() || values_.back().first < step) {  // the usual case: the next step
    values_.emplace_back(step, value);
  } else {
    const auto at = std::lower_bound(values_.begin(), values_.end(), step,
                                     [](const std::pair<int64_t, double>& e, int64_t s) { return e.first < s; });
    if (at->first == step) {
      dropped(at->second);
      at->second = value;
    } else {
      values_.emplace(at, step, value);
    }
  }
  while (static_cast<int64_t>(values_.size()) > size_) {
    dropped(values_.front().second);
    values_.pop_front();
  }
  if (smallest_) smallest_ = std::min(*smallest_, value);
}

double RobustWindow::smallest() const {
  if (!smallest_) {
    double low = values_.front().second;
    for (const auto& [step, x] : values_) low = std::min(low, x);
    smallest_ = low;
  }
  return *smallest_;
}

std::optional<RobustWindow::Spike> RobustWindow::spike(double value, double ratio, double mads,
                                                       int64_t warmup, bool bound_warmup) const {
  if (count() < std::max<int64_t>(warmup, 1)) {
    if (!bound_warmup || count() < kWarmupBoundFrom) return std::nullopt;
    double largest = 0;
    for (const auto& [step, x] : values_) largest = std::max(largest, std::abs(x));
    if (largest > 0 && value > ratio * largest) return Spike{value, largest, 0, /*warmup=*/true};
    return std::nullopt;
  }
  // With a non-negative median, a value at most ratio times the smallest one (<= the median)
  // exceeds the median by at most (ratio - 1) * median: no spike, without the median's sorting.
  if (const double low = smallest(); low >= 0 && value <= ratio * low) return std::nullopt;
  std::vector<double> v;
  v.reserve(values_.size());
  for (const auto& [step, x] : values_) v.push_back(x);
  const double median = median_of(v);
  for (double& x : v) x = std::abs(x - median);
  const double mad = median_of(v);
  if (median == 0 && mad == 0) return std::nullopt;
  const double excess = value - median;  // NaN compares false: a NaN is the non-finite detectors' business
  if (excess > (ratio - 1) * std::abs(median) && excess > mads * mad) return Spike{value, median, mad};
  return std::nullopt;
}

}  // namespace daifu::detail
