#include "snapshot/checksum.h"

#include <algorithm>
#include <cstring>

namespace daifu::detail {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "checksum64 reads input words as little-endian; add byte swaps for this target");

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;
constexpr std::size_t kStripe = 32;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline uint64_t read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline uint32_t read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// One lane step: fold an 8-byte input word into an accumulator.
inline uint64_t round(uint64_t acc, uint64_t input) {
  acc += input * kPrime2;
  acc = rotl(acc, 31);
  return acc * kPrime1;
}

inline uint64_t merge_lane(uint64_t acc, uint64_t lane) {
  acc ^= round(0, lane);
  return acc * kPrime1 + kPrime4;
}

inline void init_lanes(uint64_t lanes[4], uint64_t seed) {
  lanes[0] = seed + kPrime1 + kPrime2;
  lanes[1] = seed + kPrime2;
  lanes[2] = seed;
  lanes[3] = seed - kPrime1;
}

// Consumes whole 32-byte stripes from [p, p + n) and returns the number of bytes consumed.
// The lanes are kept in locals: stores through `unsigned char*` could alias an array.
std::size_t consume_stripes(uint64_t lanes[4], const unsigned char* p, std::size_t n) {
  const std::size_t stripes = n / kStripe;
  uint64_t v1 = lanes[0], v2 = lanes[1], v3 = lanes[2], v4 = lanes[3];
  for (std::size_t i = 0; i < stripes; ++i, p += kStripe) {
    v1 = round(v1, read64(p));
    v2 = round(v2, read64(p + 8));
    v3 = round(v3, read64(p + 16));
    v4 = round(v4, read64(p + 24));
  }
  lanes[0] = v1, lanes[1] = v2, lanes[2] = v3, lanes[3] = v4;
  return stripes * kStripe;
}

// The end of the algorithm: converge the lanes (or start from the seed for short inputs),
// add the length, fold the remaining < 32 bytes, avalanche.
uint64_t finish(const uint64_t lanes[4], uint64_t seed, uint64_t total, const unsigned char* tail,
                std::size_t tail_bytes) {
  uint64_t acc;
  if (total >= kStripe) {
    acc = rotl(lanes[0], 1) + rotl(lanes[1], 7) + rotl(lanes[2], 12) + rotl(lanes[3], 18);
    for (int i = 0; i < 4; ++i) acc = merge_lane(acc, lanes[i]);
  } else {
    acc = seed + kPrime5;
  }
  acc += total;
  const unsigned char* p = tail;
  std::size_t left = tail_bytes;
  for (; left >= 8; left -= 8, p += 8) {
    acc ^= round(0, read64(p));
    acc = rotl(acc, 27) * kPrime1 + kPrime4;
  }
  if (left >= 4) {
    acc ^= static_cast<uint64_t>(read32(p)) * kPrime1;
    acc = rotl(acc, 23) * kPrime2 + kPrime3;
    left -= 4, p += 4;
  }
  for (; left > 0; --left, ++p) {
    acc ^= static_cast<uint64_t>(*p) * kPrime5;
    acc = rotl(acc, 11) * kPrime1;
  }
  acc ^= acc >> 33;
  acc *= kPrime2;
  acc ^= acc >> 29;
  acc *= kPrime3;
  acc ^= acc >> 32;
  return acc;
}

}  // namespace

uint64_t checksum64(const void* data, std::size_t n, uint64_t seed) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t lanes[4];
  init_lanes(lanes, seed);
  const std::size_t done = consume_stripes(lanes, p, n);
  return finish(lanes, seed, n, p + done, n - done);
}

Checksum64::Checksum64(uint64_t seed) noexcept : seed_(seed) { init_lanes(lanes_, seed); }

void Checksum64::update(const void* data, std::size_t n) noexcept {
  if (n == 0) return;
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (pending_bytes_ > 0) {
    const std::size_t take = std::min(n, kStripe - pending_bytes_);
    std::memcpy(pending_ + pending_bytes_, p, take);
    pending_bytes_ += take, p += take, n -= take;
    if (pending_bytes_ < kStripe) return;
    consume_stripes(lanes_, pending_, kStripe);
    pending_bytes_ = 0;
  }
  const std::size_t done = consume_stripes(lanes_, p, n);
  pending_bytes_ = n - done;
  if (pending_bytes_ > 0) std::memcpy(pending_, p + done, pending_bytes_);
}

uint64_t Checksum64::digest() const noexcept { return finish(lanes_, seed_, total_, pending_, pending_bytes_); }

}  // namespace daifu::detail
