// What the cases' environment does to them, simulated honestly on a CPU-only machine:
// - an accelerator in exclusive-process mode that another process may hold (device contention),
// - storage whose operations fail now and then (transient faults, as in seed 000's example),
// - a device with little free memory (a real allocation failure under an address-space cap).
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace crash {

/// A device only one process may use at a time: an exclusive flock on a lock file stands for
/// the CUDA context of a GPU in exclusive-process mode. While another process holds it,
/// acquiring throws what CUDA reports then, "CUDA error: all CUDA-capable devices are busy or
/// unavailable", marked as simulated, and leaves `<lock>.refused` behind for the holder (the
/// first refusal's CLOCK_MONOTONIC nanoseconds; later refusals leave it as it is).
class ExclusiveDevice {
 public:
  /// The lock file is $CRASH_DEVICE_LOCK, or "device.lock" in the working directory.
  ExclusiveDevice();
  ~ExclusiveDevice();
  ExclusiveDevice(const ExclusiveDevice&) = delete;
  ExclusiveDevice& operator=(const ExclusiveDevice&) = delete;

 private:
  int fd_ = -1;
};

/// Whether the device could be taken now: takes the lock and lets go at once (what a program
/// passes to daifu::Options::device_probe). Never throws.
bool device_free() noexcept;

/// The other process: holds the device's lock, writes `<lock>.held`, and lets go
/// `release_after_ms` after a refusal was left behind (at most `max_s` seconds in all), then
/// writes the CLOCK_MONOTONIC nanoseconds of its release to `<lock>.released`. The first
/// refusal's are in `<lock>.refused`. Returns the process exit status.
int hold_device(const std::string& lock, int64_t release_after_ms, int64_t max_s);

/// Storage (a folder) whose every operation fails with probability `p`, independently, from a
/// seeded generator: std::system_error EIO ("Input/output error"), before anything is written.
class FlakyStorage {
 public:
  FlakyStorage(std::string folder, double p, uint64_t seed);
  /// Writes `bytes` to `<folder>/<name>` (through a temporary file and a rename).
  void put(const std::string& name, const std::string& bytes);

 private:
  std::string folder_;
  std::bernoulli_distribution fails_;
  std::mt19937_64 random_;
};

/// Caps the address space at its current size plus `free_mib` (setrlimit RLIMIT_AS), the
/// memory a device has left for this program, and keeps malloc to one arena so that threads
/// do not reserve address space of their own. Throws std::system_error if it cannot.
void cap_memory(int64_t free_mib);

}  // namespace crash
