#include "surgery/memory_fit.h"

#include "core/bounded_regex.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <regex>
#include <string_view>

#if defined(__linux__)
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace daifu::detail {
namespace {

// "268435456 bytes", "2.00 GiB", "20.00 MiB", "512.00 KiB", "12 B".
int64_t size_of(const std::string& number, const std::string& unit) {
  double scale = 1;
  if (unit == "KiB") scale = 1024.0;
  else if (unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "GiB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "TiB") scale = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "PiB") scale = 1024.0 * 1024 * 1024 * 1024 * 1024;
  const double v = std::stod(number) * scale;
  return v >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(v);
}

// The size `pattern` matches, searched only from just before the first `anchor`, a literal part
// of it: std::regex takes tens of µs to scan a whole message, most of a cold repair's time.
// -1 where the message does not say it.
int64_t find_size(const std::string& message, std::string_view anchor, const std::regex& pattern) {
  constexpr std::size_t kNumberWidth = 32;  // "; 13.37 GiB" before an anchor that follows the size
  const std::size_t limit = std::min(message.size(), kRegexWindow);
  const std::size_t at = message.find(anchor);
  if (at == std::string::npos || at >= limit) return -1;
  const auto from = message.begin() + static_cast<std::ptrdiff_t>(at > kNumberWidth ? at - kNumberWidth : 0);
  std::smatch m;
  if (!std::regex_search(from, message.begin() + static_cast<std::ptrdiff_t>(limit), m, pattern)) return -1;
  return size_of(m[1].str(), m[2].str());
}

int64_t saturating_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

}  // namespace

OomMessage parse_oom_message(const std::string& message) {
  static const std::string size = "([0-9]+(?:\\.[0-9]+)?) ?(bytes|B|KiB|MiB|GiB|TiB|PiB)";
  static const std::regex requested("[Tt]ried to allocate " + size);
  // 2.x: "... of which 3.56 MiB is free. ... and 488.24 MiB is reserved by PyTorch but unallocated."
  static const std::regex free_2x("of which " + size + " is free");
  static const std::regex unallocated_2x("and " + size + " is reserved by PyTorch but unallocated");
  // 1.13: "(GPU 0; 15.78 GiB total capacity; 13.37 GiB already allocated; 1.26 GiB free; 13.85 GiB reserved in total by PyTorch)"
  static const std::regex free_1x("; " + size + " free;");
  static const std::regex allocated_1x("; " + size + " already allocated");
  static const std::regex reserved_1x("; " + size + " reserved in total by PyTorch");
  OomMessage m;
  m.cpu = message.find("DefaultCPUAllocator") != std::string::npos ||
          message.find("can't allocate memory") != std::string::npos;
  try {
    m.requested = find_size(message, "ried to allocate ", requested);
    if (const int64_t f = find_size(message, "of which ", free_2x); f >= 0) {
      m.free = saturating_add(f, std::max<int64_t>(0, find_size(message, " is reserved by PyTorch but unallocated",
                                                                unallocated_2x)));
    } else if (const int64_t f1 = find_size(message, " free;", free_1x); f1 >= 0) {
      const int64_t allocated = find_size(message, " already allocated", allocated_1x);
      const int64_t reserved = find_size(message, " reserved in total by PyTorch", reserved_1x);
      m.free = saturating_add(f1, allocated >= 0 && reserved > allocated ? reserved - allocated : 0);
    }
  } catch (const std::exception&) {  // a number beyond stod's range: say nothing
    return {};
  }
  return m;
}

#if defined(__linux__)
namespace {

// /proc/self/statm, opened once by prepare_address_space_headroom() and read again with
// pread(2) at offset 0 (procfs regenerates it): its open(2) took ~50 µs in a cold recovery,
// most of the new size's computation. Another process (a fork's child) opens it each time.
std::atomic<int> g_statm{-1};
std::atomic<pid_t> g_statm_owner{-1};

// The pages this process maps (statm's first field), or -1.
long long mapped_pages() {
  char text[64] = {};
  ssize_t got = -1;
  const int kept = g_statm.load(std::memory_order_acquire);
  if (kept >= 0 && g_statm_owner.load(std::memory_order_acquire) == ::getpid()) {
    got = ::pread(kept, text, sizeof text - 1, 0);
  } else {
    const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    got = ::read(fd, text, sizeof text - 1);
    ::close(fd);
  }
  if (got <= 0) return -1;
  char* end = nullptr;
  const long long pages = std::strtoll(text, &end, 10);
  return end == text || pages < 0 ? -1 : pages;
}

}  // namespace
#endif

void prepare_address_space_headroom() noexcept {
#if defined(__linux__)
  if (g_statm.load(std::memory_order_acquire) >= 0) return;
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  g_statm_owner.store(::getpid(), std::memory_order_release);
  int none = -1;
  if (!g_statm.compare_exchange_strong(none, fd, std::memory_order_acq_rel)) ::close(fd);  // another thread's won
#endif
}

std::optional<int64_t> address_space_headroom() {
#if defined(__linux__)
  rlimit cap{};
  if (getrlimit(RLIMIT_AS, &cap) != 0 || cap.rlim_cur == RLIM_INFINITY) return std::nullopt;
  const long long pages = mapped_pages();
  if (pages < 0) return std::nullopt;
  const int64_t used = pages * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
  const auto limit = static_cast<int64_t>(std::min<rlim_t>(cap.rlim_cur, INT64_MAX));
  return std::max<int64_t>(0, limit - used);
#else
  return std::nullopt;
#endif
}

std::optional<int64_t> fitting_batch(int64_t old, int64_t requested, int64_t headroom) {
  if (old <= 0 || requested <= 0 || headroom < 0) return std::nullopt;
  const double fits = (1 - kSpare) * static_cast<double>(old) * static_cast<double>(headroom) /
                      (static_cast<double>(headroom) + kPeakPerRefused * static_cast<double>(requested));
  return static_cast<int64_t>(std::floor(fits));
}

}  // namespace daifu::detail
