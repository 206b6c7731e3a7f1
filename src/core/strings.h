// Small string helpers every folder may use.
#pragma once

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

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

/// The non-negative decimal number `text` (digits only, all of it) if it fits in T; else nullopt.
/// For numbers in file names, which anyone able to write the folder chooses.
template <typename T>
std::optional<T> parse_decimal(std::string_view text) noexcept {
  T value{};
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (err != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace daifu::detail
