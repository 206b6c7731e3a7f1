// checksum64: XXH64 (the 64-bit xxHash), written from its public specification. It checksums
// snapshot payloads: four independent multiply-rotate lanes run near memory bandwidth on one
// core, where a software CRC32 manages about 1 GB/s. Not cryptographic.
#pragma once

#include <daifu/export.h>

#include <cstddef>
#include <cstdint>

namespace daifu::detail {

/// XXH64 of `n` bytes at `data`; equal to the reference implementation's XXH64(data, n, seed).
DAIFU_API uint64_t checksum64(const void* data, std::size_t n, uint64_t seed = 0) noexcept;

/// The same hash over data that arrives in pieces: any number of update(), then digest().
/// The pieces may be of any size; the result equals checksum64 of their concatenation.
class DAIFU_API Checksum64 {
 public:
  explicit Checksum64(uint64_t seed = 0) noexcept;
  void update(const void* data, std::size_t n) noexcept;
  uint64_t digest() const noexcept;

 private:
  uint64_t lanes_[4];
  uint64_t seed_;
  uint64_t total_ = 0;
  unsigned char pending_[32];
  std::size_t pending_bytes_ = 0;
};

}  // namespace daifu::detail
