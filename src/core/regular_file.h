// Opening and reading files in a folder that someone else may have written into: a symbolic
// link is never followed, and a FIFO, device or socket is refused instead of blocking or
// streaming forever. Knows nothing of torch or of the session (a ground-layer file).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>

namespace daifu::detail {

/// ::open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode), refused unless the result is a regular
/// file. Returns the descriptor (blocking, as `flags` asked), or -1 with `why` (when given)
/// saying what is wrong, to follow the path in a message ("is a FIFO, not a regular file",
/// "cannot be opened: Permission denied"); errno is kept from the failed call where there was one.
int open_regular_file(const std::filesystem::path& path, int flags, mode_t mode = 0, std::string* why = nullptr) noexcept;

/// The whole of regular file `path` if it is at most `max_bytes`; otherwise nullopt, with `why`
/// (when given) saying what is wrong as open_regular_file does. Never throws.
std::optional<std::string> read_regular_file(const std::filesystem::path& path, std::size_t max_bytes,
                                             std::string* why = nullptr) noexcept;

/// What `path` is when it exists and is not a regular file ("a symbolic link", "a FIFO",
/// "a directory", ...); empty when it is a regular file or does not exist. Does not follow links.
std::string special_file_kind(const std::filesystem::path& path) noexcept;

}  // namespace daifu::detail
