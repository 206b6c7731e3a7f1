// Parsing JSON that comes from outside the process: a workplace's journal lines, commands,
// paused.json and failure reports, which anyone able to write the workplace may have written.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace daifu::detail {

/// The deepest nesting accepted. nlohmann parses any depth without recursion, but copying,
/// comparing or writing a value recurses once per level: 100 000 levels overflow the stack.
/// daifu's own files nest a few levels deep.
inline constexpr std::size_t kMaxJsonDepth = 64;

/// `text` parsed, or a discarded value (is_discarded()) if it is not JSON or nests deeper than
/// kMaxJsonDepth; then `why`, when given, says which in a few words. Never throws.
nlohmann::json parse_untrusted_json(std::string_view text, std::string* why = nullptr) noexcept;

/// The largest file parse_untrusted_json_file reads (a failure report with a long message and
/// stack is some kilobytes).
inline constexpr std::size_t kMaxJsonFileBytes = 64u << 20;

/// The regular file `path` (not a link, FIFO or device; at most kMaxJsonFileBytes) parsed as by
/// parse_untrusted_json; discarded, with `why`, when it cannot be read or parsed. Never throws.
nlohmann::json parse_untrusted_json_file(const std::filesystem::path& path, std::string* why = nullptr) noexcept;

}  // namespace daifu::detail
