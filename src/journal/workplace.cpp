#include "journal/workplace.h"

#include <daifu/errors.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

namespace daifu::detail {
namespace {

void check_writable(const std::filesystem::path& dir) {
  const auto probe = dir / (".daifu_write_probe." + std::to_string(::getpid()));
  {
    std::ofstream out(probe);
    out << "probe\n";
    if (!out) {
      throw Error("daifu: workplace folder " + dir.string() + " is not writable (" +
                  std::strerror(errno) + "); pass a writable path to Options::workplace()");
    }
  }
  std::error_code ignored;
  std::filesystem::remove(probe, ignored);
}

}  // namespace

std::filesystem::path prepare_workplace(const std::string& path) {
  if (path.empty()) throw Error("daifu: Options::workplace() is empty; give it a folder path");
  std::filesystem::path dir(path);
  for (const auto& sub : {dir, dir / kFailuresDir}) {
    std::error_code ec;
    std::filesystem::create_directories(sub, ec);
    if (ec || !std::filesystem::is_directory(sub)) {
      throw Error("daifu: cannot create workplace folder " + sub.string() + ": " +
                  (ec ? ec.message() : "a file of that name is in the way") +
                  "; pass a writable path to Options::workplace()");
    }
    check_writable(sub);
  }
  // Hot patches and commands are taken only from folders nobody else may write
  // (docs/hot-patching.md).
  for (const char* name : {kPatchesDir, kControlDir}) {
    std::error_code ec;
    if (std::filesystem::create_directory(dir / name, ec)) {
      std::filesystem::permissions(dir / name, std::filesystem::perms::owner_all, ec);
    }
  }
  return dir;
}

}  // namespace daifu::detail
