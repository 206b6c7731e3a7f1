// A double for a journal line: a JSON number, or "nan", "inf", "-inf" (JSON has no such numbers).
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>

namespace daifu::detail {

inline nlohmann::json json_number(double v) {
  if (std::isfinite(v)) return v;
  return std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf";
}

}  // namespace daifu::detail
