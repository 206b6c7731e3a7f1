#include "patch/patch_library.h"

#include <daifu/errors.h>

#include "core/private_folder.h"
#include "patch/sha256.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <exception>

namespace daifu::detail {
namespace fs = std::filesystem;

void check_patch_folder(const fs::path& folder) { check_private_folder(folder, "patches folder"); }

LoadedPatch load_patch(const fs::path& file, const fs::path& folder) {
  check_patch_folder(folder);
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw Error("daifu: the patch " + file.string() + " is not a regular file (links are not followed)");
  }
  std::error_code ec;
  if (fs::weakly_canonical(file, ec).parent_path() != fs::weakly_canonical(folder, ec)) {
    throw Error("daifu: the patch " + file.string() + " is not in the patches folder " + folder.string());
  }
  check_private(file, st, "patch");

  LoadedPatch patch;
  patch.path = file.string();
  patch.sha256 = sha256_file(patch.path);
  void* handle = ::dlopen(patch.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    throw Error("daifu: the patch " + patch.path + " does not load: " + (why ? why : "unknown dlopen error"));
  }
  ::dlerror();
  auto abi = reinterpret_cast<daifu_patch_abi_fn>(::dlsym(handle, "daifu_patch_abi_version"));
  auto entry = reinterpret_cast<daifu_patch_v1_fn>(::dlsym(handle, "daifu_patch_v1"));
  if (abi == nullptr || entry == nullptr) {
    ::dlclose(handle);
    throw Error("daifu: the patch " + patch.path + " exports no " +
                (abi == nullptr ? "daifu_patch_abi_version()" : "daifu_patch_v1()") +
                "; define its entry point with DAIFU_PATCH(function) from <daifu/patch.h>");
  }
  if (const int version = abi(); version != DAIFU_PATCH_ABI_VERSION) {
    ::dlclose(handle);
    throw Error("daifu: the patch " + patch.path + " was built for patch ABI version " + std::to_string(version) +
                "; this daifu speaks version " + std::to_string(DAIFU_PATCH_ABI_VERSION) +
                ": rebuild it against this daifu");
  }
  patch.entry = entry;  // the handle stays open: see LoadedPatch
  return patch;
}

Action run_patch(const LoadedPatch& patch, PatchContext& context) {
  int result = 0;
  try {
    result = patch.entry(context);
  } catch (const std::exception& e) {
    throw Error("daifu: the patch " + patch.path + " threw: " + e.what());
  } catch (...) {
    throw Error("daifu: the patch " + patch.path + " threw something that is not a std::exception");
  }
  switch (result) {
    case static_cast<int>(Action::Retry): return Action::Retry;
    case static_cast<int>(Action::Skip): return Action::Skip;
    case static_cast<int>(Action::Escalate): return Action::Escalate;
    case static_cast<int>(Action::Decline): return Action::Decline;
    default:
      throw Error("daifu: the patch " + patch.path + " returned " + std::to_string(result) +
                  ", which is not a daifu::Action (0 retry, 1 skip, 2 escalate, 3 decline)");
  }
}

}  // namespace daifu::detail
