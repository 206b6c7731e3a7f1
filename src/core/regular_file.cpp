#include "core/regular_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace daifu::detail {
namespace {

const char* kind_of(mode_t mode) noexcept {
  if (S_ISREG(mode)) return "";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a regular file";
}

void say(std::string* why, std::string text) noexcept {
  if (why == nullptr) return;
  try {
    *why = std::move(text);
  } catch (...) {
  }
}

}  // namespace

int open_regular_file(const std::filesystem::path& path, int flags, mode_t mode, std::string* why) noexcept {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
  const int fd = ::open(path.c_str(), flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
  if (fd < 0) {
    const int err = errno;
    struct stat st {};
    // O_NOFOLLOW fails with ELOOP on a link; a FIFO without a reader, opened for writing, with ENXIO.
    const bool special = (err == ELOOP || err == ENXIO) && ::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode);
    say(why, special ? std::string("is ") + kind_of(st.st_mode) + ", not a regular file"
                     : std::string("cannot be opened: ") + std::strerror(err));
    errno = err;
    return -1;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    say(why, std::string("is ") + kind_of(st.st_mode) + ", not a regular file");
    ::close(fd);
    errno = EINVAL;
    return -1;
  }
  if ((flags & O_NONBLOCK) == 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

std::optional<std::string> read_regular_file(const std::filesystem::path& path, std::size_t max_bytes,
                                             std::string* why) noexcept {
  const int fd = open_regular_file(path, O_RDONLY, 0, why);
  if (fd < 0) return std::nullopt;
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } closer{fd};
  try {
    std::string text;
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        say(why, std::string("cannot be read: ") + std::strerror(errno));
        return std::nullopt;
      }
      if (n == 0) return text;
      if (text.size() + static_cast<std::size_t>(n) > max_bytes) {
        say(why, "is larger than " + std::to_string(max_bytes) + " bytes");
        return std::nullopt;
      }
      text.append(buf, static_cast<std::size_t>(n));
    }
  } catch (const std::exception& e) {
    say(why, std::string("cannot be read: ") + e.what());
    return std::nullopt;
  }
}

std::string special_file_kind(const std::filesystem::path& path) noexcept {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "";
  return kind_of(st.st_mode);
}

}  // namespace daifu::detail
