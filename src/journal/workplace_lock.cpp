#include "journal/workplace_lock.h"

#include <daifu/errors.h>

#include "core/regular_file.h"
#include "core/strings.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace daifu::detail {

WorkplaceLock::WorkplaceLock(const std::filesystem::path& workplace) {
  const auto path = workplace / kLockFile;
  std::string why;
  fd_ = open_regular_file(path, O_RDWR | O_CREAT, 0600, &why);
  if (fd_ < 0) throw Error("daifu: the workplace lock " + path.string() + " " + why);
  int locked;
  do {
    locked = ::flock(fd_, LOCK_EX | LOCK_NB);
  } while (locked != 0 && errno == EINTR);
  if (locked != 0) {
    const int err = errno;
    char text[32] = {};
    const ssize_t n = ::pread(fd_, text, sizeof text - 1, 0);
    ::close(fd_);
    if (err != EWOULDBLOCK) {
      throw Error("daifu: cannot lock the workplace " + workplace.string() + ": " + std::strerror(err));
    }
    std::string_view pid(text, n > 0 ? static_cast<std::size_t>(n) : 0);
    pid = pid.substr(0, pid.find('\n'));
    const auto holder = parse_decimal<long long>(pid);
    const std::string who = !holder ? "another process"
                            : *holder == ::getpid() ? "another Session of this process"
                                                    : "process " + std::to_string(*holder);
    throw Error("daifu: the workplace " + workplace.string() + " is in use by " + who +
                "; one workplace has one writer: wait for it to end, or give this run its own Options::workplace()");
  }
  // Without the pid the lock holds all the same; a second writer's message is only vaguer.
  const std::string pid = std::to_string(::getpid()) + "\n";
  [[maybe_unused]] const bool written = ::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) > 0;
}

WorkplaceLock::~WorkplaceLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace daifu::detail
