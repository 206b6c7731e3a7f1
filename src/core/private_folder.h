// The ownership check for everything daifu writes into or takes code or commands from (the
// workplace and its folders, a patch file): it must belong to this process's user and be
// writable by nobody else, so that no other user can plant links for daifu's writes to follow
// or put code into the training process.
#pragma once

#include <filesystem>
#include <string>

struct stat;

namespace daifu::detail {

/// Throws daifu::Error unless `path`, whose stat (or lstat) is `st`, is owned by this process's
/// user and not writable by group or others. `what` names it in the message ("patch"); the
/// message says how to fix it.
void check_private(const std::filesystem::path& path, const struct stat& st, const std::string& what);

/// Throws daifu::Error unless `folder` is a directory that passes check_private; `what` names it
/// in the message ("control folder").
void check_private_folder(const std::filesystem::path& folder, const std::string& what);

}  // namespace daifu::detail
