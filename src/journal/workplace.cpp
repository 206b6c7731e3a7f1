#include "journal/workplace.h"

#include <daifu/errors.h>

#include "core/private_folder.h"
#include "core/regular_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace daifu::detail {
namespace {

namespace fs = std::filesystem;

void check_writable(const fs::path& dir) {
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw Error("daifu: workplace folder " + dir.string() + " is not writable (" + std::strerror(errno) +
                "); pass a writable path to Options::workplace()");
  }
}

// Creates `dir` (mode 0700, its parents as the umask says) unless it exists; then checks that
// it is a folder this process's user owns and nobody else may write.
void make_private_folder(const fs::path& dir) {
  std::error_code ec;
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw Error("daifu: cannot create workplace folder " + dir.string() + ": " + std::strerror(errno) +
                "; pass a writable path to Options::workplace()");
  }
  if (!fs::is_directory(dir, ec)) {
    throw Error("daifu: cannot create workplace folder " + dir.string() +
                ": a file of that name is in the way; pass a folder path to Options::workplace()");
  }
  check_private_folder(dir, "workplace folder");
  check_writable(dir);
}

}  // namespace

std::filesystem::path prepare_workplace(const std::string& path) {
  if (path.empty()) throw Error("daifu: Options::workplace() is empty; give it a folder path");
  const fs::path dir(path);
  // Whoever may write the workplace may plant links that daifu's writes would follow, or
  // patches and commands that it would run; so it must be this user's alone (docs/security.md).
  for (const fs::path& folder : {dir, dir / kFailuresDir, dir / kPatchesDir, dir / kControlDir}) {
    make_private_folder(folder);
  }
  for (const char* name : {kJournalFile, kRecordFile}) {
    const std::string kind = special_file_kind(dir / name);
    if (!kind.empty()) {
      throw Error("daifu: " + (dir / name).string() + " is " + kind +
                  ", not a regular file; daifu writes only regular files into its workplace (remove it)");
    }
  }
  return dir;
}

}  // namespace daifu::detail
