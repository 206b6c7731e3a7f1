#include "detect/float_reductions.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// The helpers below take and return 32-byte vectors; they are always inlined, so the warning
// that such a return changes the calling convention without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace daifu::detail {
namespace {

// Eight floats, as GCC's and Clang's vector extension: AVX registers where the target has
// them, pairs of SSE registers otherwise. Four independent accumulators hide the add latency.
using Floats = float __attribute__((vector_size(32)));
using Ints = int32_t __attribute__((vector_size(32)));
constexpr std::size_t kWidth = 8;
constexpr std::size_t kStride = 4 * kWidth;
// Elements per float partial sum: bounds the float rounding error before the double total.
constexpr std::size_t kBlock = 4096;

[[gnu::always_inline]] inline Floats load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

[[gnu::always_inline]] inline Floats magnitude(Floats v) {
  return reinterpret_cast<Floats>(reinterpret_cast<Ints>(v) & 0x7fffffff);
}

[[gnu::always_inline]] inline double sum_of_squares_loop(const float* data, std::size_t n) {
  double total = 0;
  std::size_t i = 0;
  while (i < n) {
    const std::size_t end = std::min(n, i + kBlock);
    Floats a = {}, b = {}, c = {}, d = {};
    for (; i + kStride <= end; i += kStride) {
      const Floats w = load(data + i), x = load(data + i + kWidth), y = load(data + i + 2 * kWidth),
                   z = load(data + i + 3 * kWidth);
      a += w * w;
      b += x * x;
      c += y * y;
      d += z * z;
    }
    float tail = 0;
    for (; i < end; ++i) tail += data[i] * data[i];
    const Floats all = (a + b) + (c + d);
    for (std::size_t l = 0; l < kWidth; ++l) total += all[l];
    total += tail;
  }
  return total;
}

[[gnu::always_inline]] inline float largest_abs_loop(const float* data, std::size_t n) {
  Floats a = {}, b = {};
  Ints nan = {};
  std::size_t i = 0;
  for (; i + 2 * kWidth <= n; i += 2 * kWidth) {
    const Floats x = magnitude(load(data + i)), y = magnitude(load(data + i + kWidth));
    a = x > a ? x : a;
    b = y > b ? y : b;
    nan |= (x != x) | (y != y);
  }
  float largest = 0;
  bool any_nan = false;
  for (; i < n; ++i) {
    const float x = std::fabs(data[i]);
    largest = x > largest ? x : largest;
    any_nan |= x != x;
  }
  for (std::size_t l = 0; l < kWidth; ++l) {
    largest = std::max({largest, a[l], b[l]});
    any_nan |= nan[l] != 0;
  }
  return any_nan ? std::numeric_limits<float>::quiet_NaN() : largest;
}

#if defined(__x86_64__)
// On x86-64 each loop twice: for AVX2 with FMA, and for any x86-64; the first where the CPU has
// them (the sums may then differ from the other copy's in the last bits: FMA rounds once).
[[gnu::target("avx2,fma")]] double sum_of_squares_avx2(const float* d, std::size_t n) { return sum_of_squares_loop(d, n); }
[[gnu::target("avx2,fma")]] float largest_abs_avx2(const float* d, std::size_t n) { return largest_abs_loop(d, n); }

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

}  // namespace

double sum_of_squares(const float* data, std::size_t n) noexcept {
#if defined(__x86_64__)
  if (has_avx2()) return sum_of_squares_avx2(data, n);
#endif
  return sum_of_squares_loop(data, n);
}

float largest_abs(const float* data, std::size_t n) noexcept {
#if defined(__x86_64__)
  if (has_avx2()) return largest_abs_avx2(data, n);
#endif
  return largest_abs_loop(data, n);
}

}  // namespace daifu::detail
