#include "environment.h"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <malloc.h>
#include <stdexcept>
#include <sys/file.h>
#include <sys/resource.h>
#include <system_error>
#include <ctime>
#include <thread>
#include <fcntl.h>
#include <unistd.h>

namespace crash {
namespace {

std::string lock_path() {
  const char* env = std::getenv("CRASH_DEVICE_LOCK");
  return env != nullptr && *env != '\0' ? env : "device.lock";
}

int open_lock(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "opening the device lock " + path);
  return fd;
}

int64_t monotonic_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

}  // namespace

bool device_free() noexcept {
  const int fd = ::open(lock_path().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const bool got = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);  // lets go of it again
  return got;
}

ExclusiveDevice::ExclusiveDevice() {
  const std::string path = lock_path();
  fd_ = open_lock(path);
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
  const int error = errno;
  ::close(fd_);
  fd_ = -1;
  if (error != EWOULDBLOCK) throw std::system_error(error, std::generic_category(), "locking " + path);
  if (!std::filesystem::exists(path + ".refused")) std::ofstream(path + ".refused") << monotonic_ns() << "\n";
  throw std::runtime_error(
      "CUDA error: all CUDA-capable devices are busy or unavailable (simulated: the device lock " + path +
      " is held by another process)");
}

ExclusiveDevice::~ExclusiveDevice() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
}

int hold_device(const std::string& lock, int64_t release_after_ms, int64_t max_s) {
  const int fd = open_lock(lock);
  if (::flock(fd, LOCK_EX) != 0) return 1;
  std::filesystem::remove(lock + ".refused");
  std::filesystem::remove(lock + ".released");
  std::ofstream(lock + ".held") << ::getpid() << "\n";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(max_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(lock + ".refused")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(release_after_ms));
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int64_t released = monotonic_ns();
  ::close(fd);
  std::ofstream(lock + ".released") << released << "\n";
  std::filesystem::remove(lock + ".held");
  return 0;
}

FlakyStorage::FlakyStorage(std::string folder, double p, uint64_t seed)
    : folder_(std::move(folder)), fails_(p), random_(seed) {
  std::filesystem::create_directories(folder_);
}

void FlakyStorage::put(const std::string& name, const std::string& bytes) {
  const std::string path = folder_ + "/" + name;
  if (fails_(random_)) throw std::system_error(EIO, std::generic_category(), "storage: writing " + path);
  {
    std::ofstream out(path + ".tmp", std::ios::binary);
    out << bytes;
    if (!out.flush()) throw std::system_error(errno, std::generic_category(), "storage: writing " + path);
  }
  std::filesystem::rename(path + ".tmp", path);
}

void cap_memory(int64_t free_mib) {
  mallopt(M_ARENA_MAX, 1);
  std::ifstream status("/proc/self/status");
  std::string line;
  int64_t vm_kib = -1;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) vm_kib = std::strtoll(line.c_str() + 7, nullptr, 10);
  }
  if (vm_kib < 0) throw std::runtime_error("cap_memory: no VmSize in /proc/self/status");
  rlimit limit{};
  limit.rlim_cur = limit.rlim_max = static_cast<rlim_t>((vm_kib * 1024) + (free_mib << 20));
  if (::setrlimit(RLIMIT_AS, &limit) != 0) throw std::system_error(errno, std::generic_category(), "setrlimit(RLIMIT_AS)");
}

}  // namespace crash
