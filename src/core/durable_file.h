// Files that survive a crash whole: the one place daifu writes a file by a temporary, fsync
// and rename. Knows nothing of torch or of the session (a ground-layer file).
#pragma once

#include <filesystem>
#include <string_view>

namespace daifu::detail {

/// Replaces `target` with `text` so that a reader, or the file system after a crash or power
/// loss, sees the old file or the new one, never a part: writes a temporary file beside it
/// (".<name>.<pid>.tmp"), fsyncs it, renames it over `target` and fsyncs the folder.
/// Throws std::runtime_error naming the file and the system's reason; the temporary is removed.
void write_file_atomically(const std::filesystem::path& target, std::string_view text);

/// fsyncs folder `dir` (the names in it: a rename or a new file). Best effort: a folder that
/// cannot be opened is left as it is.
void sync_directory(const std::filesystem::path& dir) noexcept;

}  // namespace daifu::detail
