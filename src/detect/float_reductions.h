// Reductions over a contiguous run of floats, for the detectors' per-step checks on CPU
// tensors: plain loops, no dispatch, vectorized for the CPU the process runs on. Torch-free.
#pragma once

#include <cstddef>

namespace daifu::detail {

/// The sum of the squares of data[0..n), accumulated in float lanes per block of 4096
/// elements and added up in double. Not finite if an element is not finite, or if a square
/// (|x| > 1.8e19) or a lane's sum within a block overflows float.
double sum_of_squares(const float* data, std::size_t n) noexcept;

/// The largest |x| of data[0..n) (0 for n == 0); NaN if any element is NaN.
float largest_abs(const float* data, std::size_t n) noexcept;

}  // namespace daifu::detail
