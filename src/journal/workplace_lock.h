// One workplace, one writer: the lock a Session holds on its workplace for its lifetime.
#pragma once

#include <filesystem>

namespace daifu::detail {

inline constexpr const char* kLockFile = "session.lock";

/// An exclusive flock(2) on <workplace>/session.lock, which holds the holder's pid. The kernel
/// drops it when the holder exits, however it ends, so a killed run never leaves a stale lock.
/// Two Sessions of one process on one workplace exclude each other too (each opens the file).
class WorkplaceLock {
 public:
  /// Throws daifu::Error when another Session, here or in another process, holds the
  /// workplace, naming its pid; or when the lock file cannot be created.
  explicit WorkplaceLock(const std::filesystem::path& workplace);
  ~WorkplaceLock();
  WorkplaceLock(const WorkplaceLock&) = delete;
  WorkplaceLock& operator=(const WorkplaceLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace daifu::detail
