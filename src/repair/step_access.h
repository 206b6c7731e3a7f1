// What the step loop and the repairs may change in a daifu::Step: Step's one friend. Users read
// a step through its public accessors; only code in src/ sets its index and attempt, points it
// at the session, and sees or forgets its Step::once values (the batch a surgery may adapt).
#pragma once

#include <daifu/step.h>

#include <cstdint>
#include <string>
#include <typeinfo>
#include <unordered_map>

namespace daifu::detail {

class SessionImpl;

struct StepAccess {
  /// A step's Step::once values by key (copied whole when the step loop keeps them for a re-run).
  using Memos = std::unordered_map<std::string, Step::Memo>;

  static int64_t& index(Step& step) noexcept { return step.index_; }
  static int64_t& attempt(Step& step) noexcept { return step.attempt_; }
  /// The index of the first step of the step's loop (Step::position).
  static int64_t& first(Step& step) noexcept { return step.first_; }
  /// Whether the step's batch comes from a DAIFU_GUARD_EACH range, whose batch size is not a knob.
  static bool& from_range(Step& step) noexcept { return step.from_range_; }
  /// The session a running step belongs to; null outside a guard loop.
  static SessionImpl*& session(Step& step) noexcept { return step.session_; }
  static std::string& micro_batch_knob(Step& step) noexcept { return step.micro_knob_; }
  static Memos& memos(Step& step) noexcept { return step.memo_; }
  static const Memos& memos(const Step& step) noexcept { return step.memo_; }

  /// Calls fn(key, type, value) for each Step::once value of `step`.
  template <class F>
  static void for_each_memo(Step& step, F&& fn) {
    for (auto& [key, memo] : step.memo_) fn(key, *memo.type, memo.value.get());
  }
  /// What Step::once does after storing or finding a value: an armed nan_data fault lands in it.
  static void memoized(Step& step) { step.memoized(); }
  /// Forgets the Step::once values: the next attempt calls make() again (draws a new batch).
  static void forget_memos(Step& step) noexcept { step.memo_.clear(); }
};

}  // namespace daifu::detail
