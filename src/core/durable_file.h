// Files that survive a crash whole: the one place daifu writes a file by a temporary, fsync
// and rename. Knows nothing of torch or of the session (a ground-layer file).
#pragma once

#include <filesystem>
#include <string_view>

namespace daifu::detail {

/// Replaces `target` with `text` so that a reader, or the file system after a crash or power
/// loss, sees the old file or the new one, never a part: creates a temporary file beside it
/// (".<name>.<pid>.tmp", O_EXCL, not through a link), fsyncs it, renames it over `target` (a
/// link of that name is replaced, not followed) and fsyncs the folder, all through one
/// descriptor of the folder.
/// Throws std::runtime_error naming the file and the system's reason; the temporary is removed.
void write_file_atomically(const std::filesystem::path& target, std::string_view text);

/// fsyncs folder `dir` (the names in it: a rename or a new file). Best effort: a folder that
/// cannot be opened is left as it is.
void sync_directory(const std::filesystem::path& dir) noexcept;

/// Removes the temporaries that killed writers left in `dir` (dot files ending in ".tmp", not
/// folders; links are removed, not followed). Only the folder's one writer may call it. Returns
/// how many were removed.
int remove_stale_temporaries(const std::filesystem::path& dir) noexcept;

}  // namespace daifu::detail
