// Loading a hot patch: the checks that keep a training process from running code it should
// not (who owns the folder and the file, who may write them), the hash that the journal
// records, and the versioned entry point.
#pragma once

#include <daifu/patch.h>

#include <filesystem>
#include <string>

namespace daifu::detail {

/// A patch library loaded into the process. It stays loaded for the process's life: code it
/// registers (a surgery, a transform) keeps pointing into it.
struct LoadedPatch {
  std::string path;
  std::string sha256;
  daifu_patch_v1_fn entry = nullptr;
};

/// Throws daifu::Error unless `folder` is a directory owned by this process's user and not
/// writable by group or others; the message says how to fix it.
void check_patch_folder(const std::filesystem::path& folder);

/// Checks `file` (a regular file directly in `folder`, owned by this user, not writable by group
/// or others), hashes it, dlopens it and finds its DAIFU_PATCH_ABI_VERSION 1 entry point.
/// Throws daifu::Error naming the file and what is wrong: a folder or file others may write,
/// a library that does not load (missing symbol, not a shared library), no
/// daifu_patch_abi_version() or daifu_patch_v1(), another ABI version.
LoadedPatch load_patch(const std::filesystem::path& file, const std::filesystem::path& folder);

/// Runs the patch's entry point. Throws daifu::Error if it throws (the message carries what it
/// threw) or returns a value that is not a daifu::Action.
Action run_patch(const LoadedPatch& patch, PatchContext& context);

}  // namespace daifu::detail
