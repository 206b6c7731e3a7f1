// Searching an exception message with a std::regex without overflowing the stack.
#pragma once

#include <algorithm>
#include <cstddef>
#include <regex>
#include <string>

namespace daifu::detail {

/// How much of a message a regex sees: its first 1024 characters. std::regex recurses once per
/// character a `.*` runs over, about 0.3-0.5 KB of stack each (GCC 12, -O2: 4000 characters
/// overflow a 1 MB thread stack, 30 000 the main thread's 8 MB), and classification cannot
/// fail: a 30 KB message once killed the process. 1024 characters stay under 0.5 MB.
inline constexpr std::size_t kRegexWindow = 1024;

/// std::regex_search over the first kRegexWindow characters of `text`.
inline bool regex_search_bounded(const std::string& text, const std::regex& regex) {
  const auto end = text.begin() + static_cast<std::ptrdiff_t>(std::min(text.size(), kRegexWindow));
  return std::regex_search(text.begin(), end, regex);
}

}  // namespace daifu::detail
