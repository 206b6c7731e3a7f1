// Small string helpers every folder may use.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <exception>
#include <string>

namespace daifu::detail {

/// ASCII lower case, for case-insensitive matching of messages and names.
inline std::string lowercase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

/// `v` with `significant` significant digits (printf's %g): for numbers in messages.
inline std::string format_number(double v, int significant) {
  char text[40];
  std::snprintf(text, sizeof text, "%.*g", significant, v);
  return text;
}

/// The first line of an exception's message (a c10::Error appends a backtrace after it).
inline std::string first_line(const std::exception& e) {
  const std::string what = e.what();
  return what.substr(0, what.find('\n'));
}

}  // namespace daifu::detail
