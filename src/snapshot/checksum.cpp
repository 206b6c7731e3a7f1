#include "snapshot/checksum.h"

#include <xxhash.h>

#include <new>

namespace daifu::detail {

uint64_t checksum64(const void* data, std::size_t n, uint64_t seed) noexcept { return XXH64(data, n, seed); }

void Checksum64::FreeState::operator()(XXH64_state_s* state) const noexcept { XXH64_freeState(state); }

Checksum64::Checksum64(uint64_t seed) : state_(XXH64_createState()) {
  if (!state_) throw std::bad_alloc();
  XXH64_reset(state_.get(), seed);
}

void Checksum64::update(const void* data, std::size_t n) noexcept {
  if (n > 0) XXH64_update(state_.get(), data, n);
}

uint64_t Checksum64::digest() const noexcept { return XXH64_digest(state_.get()); }

}  // namespace daifu::detail
