// Repairs ("surgeries") and the registry that picks, bounds and journals them.
#pragma once

#include <daifu/export.h>
#include <daifu/failure.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace daifu {

class Session;
class Step;
namespace detail {
struct MessagePattern;         // a compiled Match::message regex (src/surgery/registry.cpp)
struct SurgeryRegistryAccess;  // src/surgery/registry_access.h: the firing counters the step loop moves
}

/// What happens to the failed step after a surgery.
enum class Action {
  Retry,     ///< run the same step again (attempt + 1)
  Skip,      ///< abandon this step's data and go on with the next step
  Escalate,  ///< give up: the guard throws daifu::Unrecovered
  Decline,   ///< on a closer look this surgery cannot help: not counted, the next one is tried;
             ///< it must change no tracked state (the guard escalates if it did)
};
DAIFU_API const char* to_string(Action action) noexcept;

/// What a surgery may look at and change while it repairs one failure.
class DAIFU_API RepairContext {
 public:
  RepairContext(Session& session, Step& step, const Failure& failure, int64_t fired_this_step);

  const Failure& failure() const noexcept { return failure_; }
  Session& session() noexcept { return session_; }
  Step& step() noexcept { return step_; }
  /// How often this surgery already fired on this step (0 the first time).
  int64_t fired_this_step() const noexcept { return fired_this_step_; }

  /// Records a change that is not a knob (knob changes are recorded by Knob::set itself).
  /// `before`/`after` are JSON text, e.g. note("sleep_ms", "0", "12").
  void note(const std::string& what, const std::string& before_json, const std::string& after_json);
  /// Sleeps for `d` (the caller bounds it) and records the wait.
  void wait(std::chrono::microseconds d);
  /// Why the surgery acts as it does, in a sentence: journaled with the repair, and part of
  /// the daifu::Unrecovered message when it escalates or declines.
  void explain(std::string why) { explanation_ = std::move(why); }
  const std::string& explanation() const noexcept { return explanation_; }

  struct Change {
    std::string what, before_json, after_json;
  };
  const std::vector<Change>& changes() const noexcept { return changes_; }

 private:
  Session& session_;
  Step& step_;
  const Failure& failure_;
  int64_t fired_this_step_;
  std::vector<Change> changes_;
  std::string explanation_;
};

/// Bounds and order of a surgery.
struct DAIFU_API SurgeryLimits {
  int priority = 100;              ///< lower runs first; built-ins use 100..199
  int64_t max_per_step = 3;        ///< fires on one step before it stops matching there
  int64_t max_per_run = 1000;      ///< fires in the whole session
};

/// A repair. The registry calls match() then apply(); both are non-virtual shells that keep a
/// throwing hook from reaching the training loop. Subclasses implement matches()/operate().
class DAIFU_API Surgery {
 public:
  virtual ~Surgery();
  const std::string& name() const noexcept { return name_; }
  const SurgeryLimits& limits() const noexcept { return limits_; }

  /// False also when matches() throws.
  bool match(const Failure& failure) const noexcept;
  /// Runs operate(); an exception from it propagates to the registry, which journals it.
  Action apply(RepairContext& context) { return operate(context); }
  /// Runs step_committed(); an exception from it is swallowed (a commit has nothing to repair).
  void committed(Session& session, int64_t step) noexcept;

 protected:
  Surgery(std::string name, SurgeryLimits limits) : name_(std::move(name)), limits_(limits) {}
  virtual bool matches(const Failure& failure) const = 0;
  virtual Action operate(RepairContext& context) = 0;
  /// After every step the loop commits for the first time (not a re-run after a rollback), for a
  /// repair that undoes itself once its cause has passed: the out_of_memory surgery grows a knob
  /// it shrank back. Runs between steps, on the loop's thread. Default: nothing.
  virtual void step_committed(Session& session, int64_t step);

 private:
  std::string name_;
  SurgeryLimits limits_;
};

using MatchFn = std::function<bool(const Failure&)>;
using ApplyFn = std::function<Action(RepairContext&)>;

/// A match that accepts one kind.
DAIFU_API MatchFn match_kind(FailureKind kind);

/// A match from conditions that must all hold; a condition not given accepts anything.
/// Usable wherever a MatchFn is.
/// Example:
///   session.surgeries().add("late_index_errors",
///                           daifu::Match()
///                               .kind(daifu::FailureKind::TensorMismatch)
///                               .exception_type("c10::IndexError")
///                               .message(R"(target \d+ is out of bounds)")
///                               .steps(1000, 2000),
///                           apply);
class DAIFU_API Match {
 public:
  Match& kind(FailureKind kind);
  /// The demangled dynamic type, exactly, e.g. "c10::IndexError" or "std::bad_alloc".
  Match& exception_type(std::string type);
  /// An ECMAScript regex searched in the message's first 1024 characters, case-insensitive.
  /// Throws daifu::Error if it does not compile.
  Match& message(const std::string& regex);
  /// Steps (of the guard loop) in [first, last).
  Match& steps(int64_t first, int64_t last);

  bool operator()(const Failure& failure) const;

 private:
  std::optional<FailureKind> kind_;
  std::optional<std::string> type_;
  std::shared_ptr<const detail::MessagePattern> message_;  // keeps <regex> out of this header
  int64_t first_ = std::numeric_limits<int64_t>::min();
  int64_t last_ = std::numeric_limits<int64_t>::max();
};

/// The surgeries of a session, ordered by priority (then by registration).
///
/// Example (a user surgery that skips batches with bad data):
///   session.surgeries().add("skip_bad_batch", daifu::match_kind(daifu::FailureKind::ExceptionalData),
///                           [](daifu::RepairContext&) { return daifu::Action::Skip; });
class DAIFU_API SurgeryRegistry {
 public:
  SurgeryRegistry();
  ~SurgeryRegistry();

  Surgery& add(std::unique_ptr<Surgery> surgery);
  Surgery& add(std::string name, MatchFn match, ApplyFn apply, SurgeryLimits limits = {});
  /// Removes a surgery by name; false if there was none.
  bool remove(const std::string& name);
  std::vector<std::string> names() const;

  /// The surgeries that match, within their bounds, in the order to try them.
  std::vector<Surgery*> candidates(const Failure& failure) const;
  /// How often surgery `name` fired in this session (a Decline does not count); 0 if there is
  /// no surgery by that name.
  int64_t fired(const std::string& name) const;

 private:
  friend struct detail::SurgeryRegistryAccess;
  struct Entry;
  std::vector<std::unique_ptr<Entry>> entries_;
};

}  // namespace daifu
