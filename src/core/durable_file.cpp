#include "core/durable_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace daifu::detail {
namespace {

std::runtime_error failure(const std::string& what, const std::filesystem::path& path, int err) {
  return std::runtime_error("cannot " + what + " " + path.string() + ": " + std::strerror(err));
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

int open_directory(const std::filesystem::path& dir) noexcept {
  return ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

}  // namespace

void write_file_atomically(const std::filesystem::path& target, std::string_view text) {
  const std::filesystem::path dir = target.parent_path();
  const std::string name = target.filename().string();
  const std::string tmp = "." + name + "." + std::to_string(::getpid()) + ".tmp";
  const Fd folder{open_directory(dir)};
  if (folder.fd < 0) throw failure("open the folder", dir, errno);
  // A temporary of this name (another process of the same pid, killed) is stale. O_EXCL and
  // O_NOFOLLOW: the file written is the one created here, never one a link points to.
  ::unlinkat(folder.fd, tmp.c_str(), 0);
  const int fd = ::openat(folder.fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw failure("create", dir / tmp, errno);
  auto fail = [&](const char* what, const std::filesystem::path& path) {
    const int err = errno;
    ::close(fd);
    ::unlinkat(folder.fd, tmp.c_str(), 0);
    return failure(what, path, err);
  };
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail("write", dir / tmp);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) throw fail("write", dir / tmp);
  // renameat replaces a link of the target's name, never what it points to.
  if (::renameat(folder.fd, tmp.c_str(), folder.fd, name.c_str()) != 0) throw fail("create", target);
  ::close(fd);
  ::fsync(folder.fd);
}

void sync_directory(const std::filesystem::path& dir) noexcept {
  const Fd folder{open_directory(dir)};
  if (folder.fd >= 0) ::fsync(folder.fd);
}

int remove_stale_temporaries(const std::filesystem::path& dir) noexcept {
  const int fd = open_directory(dir);
  if (fd < 0) return 0;
  DIR* listing = ::fdopendir(fd);
  if (listing == nullptr) {
    ::close(fd);
    return 0;
  }
  int removed = 0;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string_view name = entry->d_name;
    if (name.size() < 6 || name.front() != '.' || name.substr(name.size() - 4) != ".tmp") continue;
    struct stat st {};
    if (::fstatat(fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISDIR(st.st_mode)) continue;
    if (::unlinkat(fd, entry->d_name, 0) == 0) ++removed;
  }
  ::closedir(listing);
  return removed;
}

}  // namespace daifu::detail
