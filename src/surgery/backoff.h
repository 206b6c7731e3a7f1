// The wait of the n-th backoff (n >= 0): first * 2^n with +-50% jitter, at most `max`.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>

namespace daifu::detail {

inline std::chrono::microseconds jittered_backoff(std::chrono::microseconds first, int64_t n,
                                                  std::chrono::microseconds max, std::minstd_rand& rng) {
  const double base = std::min(static_cast<double>(first.count()) * std::ldexp(1.0, static_cast<int>(std::min<int64_t>(n, 30))),
                               static_cast<double>(max.count()));
  std::uniform_real_distribution<double> factor(0.5, 1.5);
  return std::chrono::microseconds(std::min<int64_t>(static_cast<int64_t>(base * factor(rng)), max.count()));
}

}  // namespace daifu::detail
