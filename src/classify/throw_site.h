// Throw-site capture: libdaifu interposes __cxa_throw so that every C++ throw in the process
// records its raw return addresses (~microseconds, no symbolization) in a small per-thread
// ring. The guard looks the exception up when it catches it.
#pragma once

#include <daifu/failure.h>

namespace daifu::detail {

/// The raw stack recorded when `exception_object` (the thrown object's address, as held by a
/// std::exception_ptr) was thrown on this thread; empty if the throw was not seen.
RawStack throw_site_of(const void* exception_object);

/// The address of the thrown object inside an exception_ptr (libstdc++ layout).
const void* exception_object_of(const std::exception_ptr& error) noexcept;

/// Number of throws recorded on this thread (for tests).
unsigned long long throws_seen() noexcept;

}  // namespace daifu::detail
