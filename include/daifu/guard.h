// DAIFU_GUARD: runs a loop of steps; a step that throws is classified, repaired and run again.
#pragma once

#include <daifu/export.h>
#include <daifu/step.h>

#include <cstdint>
#include <type_traits>
#include <utility>

namespace daifu {
class Session;

namespace detail {

/// A non-owning reference to a callable `void(Step&)`, valid for the duration of one call.
class StepBodyRef {
 public:
  template <class F>
  StepBodyRef(F& body) noexcept  // NOLINT: implicit by design
      : object_(&body), call_([](void* o, Step& s) { (*static_cast<F*>(o))(s); }) {}
  void operator()(Step& step) const { call_(object_, step); }

 private:
  void* object_;
  void (*call_)(void*, Step&);
};

/// The object behind DAIFU_GUARD: `GuardLoop(...) + body` runs steps [first, last).
class DAIFU_API GuardLoop {
 public:
  GuardLoop(Session& session, int64_t first, int64_t last, const char* file, int line) noexcept
      : session_(session), first_(first), last_(last), file_(file), line_(line) {}

  template <class F>
  void operator+(F&& body) && {
    run(StepBodyRef(body));
  }

 private:
  void run(StepBodyRef body);
  Session& session_;
  int64_t first_, last_;
  const char* file_;
  int line_;
};

}  // namespace detail
}  // namespace daifu

/// DAIFU_GUARD(session, step, first, last) { ...body using step... };
/// Runs the body for step indices [first, last). `step` names a daifu::Step& inside the body.
/// A throwing step is classified, journaled, repaired by the session's surgeries and run again,
/// at most Options::max_attempts times; then daifu::Unrecovered is thrown.
#define DAIFU_GUARD(session, step, first, last)                                        \
  ::daifu::detail::GuardLoop((session), (first), (last), __FILE__, __LINE__) +         \
      [&](::daifu::Step & step)
