#include "core/durable_file.h"

#include <fcntl.h>
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

}  // namespace

void write_file_atomically(const std::filesystem::path& target, std::string_view text) {
  const std::filesystem::path tmp =
      target.parent_path() / ("." + target.filename().string() + "." + std::to_string(::getpid()) + ".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw failure("create", tmp, errno);
  auto fail = [&](const char* what, const std::filesystem::path& path) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return failure(what, path, err);
  };
  for (std::size_t done = 0; done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail("write", tmp);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) throw fail("write", tmp);
  if (::rename(tmp.c_str(), target.c_str()) != 0) throw fail("create", target);
  ::close(fd);
  sync_directory(target.parent_path());
}

void sync_directory(const std::filesystem::path& dir) noexcept {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace daifu::detail
