// ASCII lower case, for case-insensitive matching of messages and names.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>

namespace daifu::detail {

inline std::string lowercase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace daifu::detail
