// checksum64: XXH64 (the 64-bit xxHash) from Debian's libxxhash. It checksums snapshot payloads
// at about memory bandwidth on one core, where a software CRC32 manages about 1 GB/s. Not
// cryptographic. The files written before libxxhash was used (a hand-written XXH64) verify
// unchanged: the algorithm is the same (tests/data/snapshot-a5e5e75).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

struct XXH64_state_s;

namespace daifu::detail {

/// XXH64 of `n` bytes at `data`; equal to the reference implementation's XXH64(data, n, seed).
uint64_t checksum64(const void* data, std::size_t n, uint64_t seed = 0) noexcept;

/// The same hash over data that arrives in pieces: any number of update(), then digest().
/// The pieces may be of any size; the result equals checksum64 of their concatenation.
class Checksum64 {
 public:
  /// Throws std::bad_alloc if libxxhash cannot allocate its state.
  explicit Checksum64(uint64_t seed = 0);
  void update(const void* data, std::size_t n) noexcept;
  uint64_t digest() const noexcept;

 private:
  struct FreeState {
    void operator()(XXH64_state_s* state) const noexcept;
  };
  std::unique_ptr<XXH64_state_s, FreeState> state_;
};

}  // namespace daifu::detail
