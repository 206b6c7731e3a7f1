#include "classify/throw_site.h"

#include <dlfcn.h>
#include <unwind.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <exception>

namespace daifu::detail {
namespace {

constexpr std::size_t kMaxFrames = 48;
constexpr std::size_t kRing = 8;

struct Record {
  const void* object = nullptr;
  std::size_t depth = 0;
  std::array<const void*, kMaxFrames> frames{};
};

struct Ring {
  std::array<Record, kRing> records;
  unsigned long long count = 0;
};

thread_local Ring t_ring;

struct UnwindState {
  Record* record;
  int skip;
};

_Unwind_Reason_Code collect_frame(_Unwind_Context* context, void* arg) {
  auto* state = static_cast<UnwindState*>(arg);
  if (state->skip > 0) {
    --state->skip;
    return _URC_NO_REASON;
  }
  const auto ip = _Unwind_GetIP(context);
  if (ip == 0) return _URC_END_OF_STACK;
  Record& r = *state->record;
  r.frames[r.depth++] = reinterpret_cast<const void*>(ip);
  return r.depth == kMaxFrames ? _URC_END_OF_STACK : _URC_NO_REASON;
}

void record_throw(void* object) noexcept {
  Ring& ring = t_ring;
  Record& r = ring.records[ring.count % kRing];
  ++ring.count;
  r.object = object;
  r.depth = 0;
  UnwindState state{&r, 1};  // skip __cxa_throw itself
  _Unwind_Backtrace(&collect_frame, &state);
}

using CxaThrow = void (*)(void*, void*, void (*)(void*));

CxaThrow real_cxa_throw() noexcept {
  static const CxaThrow real = reinterpret_cast<CxaThrow>(dlsym(RTLD_NEXT, "__cxa_throw"));
  return real;
}

}  // namespace

RawStack throw_site_of(const void* exception_object) {
  const Ring& ring = t_ring;
  const auto n = ring.count < kRing ? ring.count : kRing;
  for (unsigned long long i = 0; i < n; ++i) {
    const Record& r = ring.records[(ring.count - 1 - i) % kRing];
    if (r.object == exception_object) return RawStack(r.frames.begin(), r.frames.begin() + r.depth);
  }
  return {};
}

const void* exception_object_of(const std::exception_ptr& error) noexcept {
  // libstdc++'s exception_ptr is a single pointer to the thrown object.
  static_assert(sizeof(std::exception_ptr) == sizeof(void*));
  const void* object = nullptr;
  __builtin_memcpy(&object, &error, sizeof(object));
  return object;
}

unsigned long long throws_seen() noexcept { return t_ring.count; }

}  // namespace daifu::detail

// Interposes the C++ runtime's throw. Exported so that it precedes libstdc++'s in symbol
// lookup for every library loaded after libdaifu (libtorch included).
extern "C" __attribute__((visibility("default"), noreturn)) void __cxa_throw(
    void* object, void* type, void (*destructor)(void*)) {
  daifu::detail::record_throw(object);
  const auto real = daifu::detail::real_cxa_throw();
  if (real == nullptr) {
    std::fputs("daifu: cannot find the C++ runtime's __cxa_throw\n", stderr);
    std::abort();
  }
  real(object, type, destructor);
  __builtin_unreachable();
}
