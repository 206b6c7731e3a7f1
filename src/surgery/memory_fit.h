// How small a batch must be to fit: what the allocator's message says was refused and how
// much memory is left, and the batch that fits if a step's memory grows linearly with it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace daifu::detail {

/// What an out-of-memory message says, -1 where it says nothing.
struct OomMessage {
  int64_t requested = -1;  ///< the refused allocation: "tried to allocate N bytes" (CPU), "Tried to allocate 2.00 GiB" (CUDA)
  int64_t free = -1;       ///< CUDA: the device's free memory plus what PyTorch reserved but had not allocated
  bool cpu = false;        ///< the CPU allocator's ("DefaultCPUAllocator: can't allocate memory")
};

/// Parses the CPU allocator's and CUDA caching allocator's messages (LibTorch 1.13 and 2.x),
/// their first kRegexWindow characters (core/bounded_regex.h).
OomMessage parse_oom_message(const std::string& message);

/// What this process may still map under its address-space cap (RLIMIT_AS minus VmSize);
/// nullopt without a cap or where it cannot be read (not Linux). Thread-safe.
std::optional<int64_t> address_space_headroom();
/// Opens what address_space_headroom() reads, once per process, so that a recovery does not
/// have to (called at session start). Thread-safe.
void prepare_address_space_headroom() noexcept;

/// How much the step's peak is taken to exceed what it held when it was refused, per refused
/// byte: the refused tensor is an op's output, and the op after it (an activation, a dropout, a
/// normalization: not in place in LibTorch) makes another of its size while it is alive.
inline constexpr double kPeakPerRefused = 2;
/// The share of the headroom a fitted batch leaves unused: the process maps more as it runs
/// (allocator arenas, thread stacks, caches) and the headroom shrinks with it.
inline constexpr double kSpare = 0.25;

/// The batch that fits in `headroom` bytes if the step's memory is proportional to its batch:
/// at `old` the step held some S <= headroom when it asked for `requested` more, and its peak is
/// taken to be S + kPeakPerRefused * requested, so old * headroom / (headroom + kPeakPerRefused *
/// requested) needs at most `headroom`; kSpare of it is kept for what the process maps later.
/// nullopt when a figure is unknown (< 0) or nothing was requested.
std::optional<int64_t> fitting_batch(int64_t old, int64_t requested, int64_t headroom);

}  // namespace daifu::detail
