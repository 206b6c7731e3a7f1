// The detectors' reductions over CPU floats (src/detect/float_reductions.h): the copy for this
// machine's CPU, against LibTorch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "detect/float_reductions.h"

namespace float_reductions_test {

// The detectors' loops over CPU gradients agree with LibTorch's double-precision reductions, at
// lengths around their 16- and 32-element strides and 4096-element blocks, and keep NaN,
// infinity and overflow.
TEST(FloatReductions, MatchLibTorchAndKeepNonFiniteValues) {
  using daifu::detail::largest_abs;
  using daifu::detail::sum_of_squares;
  torch::manual_seed(3);
  for (const int64_t n : {0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 4097, 100003}) {
    const auto x = torch::randn({n}) * 3;
    const double squares = x.to(torch::kDouble).pow(2).sum().item<double>();
    EXPECT_NEAR(sum_of_squares(x.data_ptr<float>(), n), squares, 1e-5 * squares + 1e-12) << n;
    const double largest = n == 0 ? 0.0 : x.abs().max().item<double>();
    EXPECT_EQ(largest_abs(x.data_ptr<float>(), n), static_cast<float>(largest)) << n;
  }
  auto x = torch::randn({5000});
  for (const int64_t at : {3, 4099}) {  // in the lanes, in the tail of a block
    auto y = x.clone();
    y[at] = std::nanf("");
    EXPECT_TRUE(std::isnan(sum_of_squares(y.data_ptr<float>(), 5000))) << at;
    EXPECT_TRUE(std::isnan(largest_abs(y.data_ptr<float>(), 5000))) << at;
    y[at] = -std::numeric_limits<float>::infinity();
    EXPECT_TRUE(std::isinf(sum_of_squares(y.data_ptr<float>(), 5000))) << at;
    EXPECT_TRUE(std::isinf(largest_abs(y.data_ptr<float>(), 5000))) << at;
    y[at] = -1e20f;  // finite, but its square overflows float as a float32 dot product's would
    EXPECT_TRUE(std::isinf(sum_of_squares(y.data_ptr<float>(), 5000))) << at;
    EXPECT_EQ(largest_abs(y.data_ptr<float>(), 5000), 1e20f) << at;
  }
}

}  // namespace float_reductions_test
