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
#include <vector>

namespace daifu::detail {

/// `size` bytes as lower-case hex, two digits a byte.
inline std::string to_hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0xf]);
  }
  return out;
}

/// The bytes of to_hex()'s text; false (and `out` unspecified) if `text` is not that.
inline bool from_hex(std::string_view text, std::vector<unsigned char>& out) {
  auto digit = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
  if (text.size() % 2 != 0) return false;
  out.resize(text.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = digit(text[2 * i]), lo = digit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

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
