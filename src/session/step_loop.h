// The guarded step loop behind DAIFU_GUARD: run a step; on an exception classify, journal,
// check the tracked state, pick a surgery, and run the step again, bounded by max_attempts.
// One class, its members defined by concern: the loop, the repair and the rollback in
// step_loop.cpp; with Options::on_unrecovered(Pause), waiting for a hot patch or a command
// instead of rethrowing a failure no surgery repaired in pause.cpp; a failure on another rank
// of a distributed session in distributed_failure.cpp.
#pragma once

#include <daifu/guard.h>
#include <daifu/session.h>
#include <daifu/step.h>
#include <daifu/surgery.h>

#include "repair/step_access.h"
#include "session/session_impl.h"

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace daifu::detail {

struct Command;

class StepLoop {
 public:
  StepLoop(Session& session, std::string where) : session_(session), impl_(SessionAccess::impl(session)), where_(std::move(where)) {}

  /// Runs steps [first, last); with a `source` (DAIFU_GUARD_EACH), one per element it hands
  /// out, numbered from SessionImpl::next_each_step, instead.
  void run(int64_t first, int64_t last, StepBodyRef body, BatchSource* source);

  /// The exception being handled, thrown by the function of Step::after_update in `step` (its
  /// `tries`-th failure there): a path problem or a transient error, in a single-process
  /// session, with no tracked state changed since `stamp` (taken before the function ran), is
  /// journaled and repaired without re-running the step. True if a surgery retries it: run the
  /// function again. False: rethrow; the exception fails the step as any other would (its
  /// failure line, if one was written here, is then followed by the step's). Never throws.
  bool repair_after_update(Step& step, int64_t tries, int64_t stamp) noexcept;

 private:
  using Clock = std::chrono::steady_clock;
  struct Decision {
    Action action = Action::Escalate;
    bool rollback = false;  // restore the snapshot and re-run the steps since it first
    Clock::time_point caught;
  };
  /// A failure of this attempt, with the number and path of its report.
  struct Reported {
    Failure failure;
    int64_t number = 0;
    std::string report;
  };

  /// Escalates, unrepaired, the exception being handled if it is a guard loop of this session
  /// started inside the step; returns otherwise.
  void refuse_nested_loop(const Step& step);
  /// Classifies the exception being handled, journals it, starts its report and its incident.
  Reported record_failure(const Step& step, bool after_update = false);
  /// Runs `surgery` in `context`; nullopt if it threw (journaled as surgery_failed).
  std::optional<Action> apply_surgery(Surgery& surgery, RepairContext& context, const Step& step);
  /// `rollback`: restore the snapshot even if this process did not modify tracked state (a
  /// distributed session's agreement said another rank did).
  Decision handle_failure(Step& step, Clock::time_point caught, bool rollback = false);
  /// A failure in a distributed session (distributed_failure.cpp): this rank's own, or another
  /// rank's (daifu::PeerFailed). The lowest failing rank repairs it with handle_failure() and
  /// hands its decision and knob changes to the others, which roll back the same way.
  Decision handle_distributed_failure(Step& step, Clock::time_point caught);
  /// Escalates on this rank after a collective of the agreement failed.
  [[noreturn]] void lost_peers(const Step& step);
  /// Agreement::settle(), escalating if the collective fails.
  bool settle(const Step& step);
  /// Journals the repair `surgery` made in `context` and fills in the incident.
  void record_repair(const Step& step, const Reported& failed, const std::string& surgery, Action action,
                     const RepairContext& context);
  /// Escalates, or with on_unrecovered(Pause) waits for a fix and returns what it decided.
  Decision give_up(Step& step, const Reported& failed, const std::string& why, std::vector<std::string> tried,
                   Decision decision);
  Decision pause(Step& step, const Reported& failed, const std::string& why, std::vector<std::string> tried,
                 Decision decision);
  /// Carries out one command of a pause in `context`: what it decided (an action, or damage a
  /// patch did), `result` for its journal line, and `surgery`, the name its repair goes under.
  PatchRunner::Result run_command(const Command& command, RepairContext& context, const std::string& pause_id,
                                  std::string& result, std::string& surgery);
  [[noreturn]] void escalate(Failure failure, const std::string& report, const std::string& why,
                             std::vector<std::string> tried);
  /// Raises the injected crash fault `fault` in `step` now, or arms it to land where a real one would:
  /// an oom in the first micro-batch of a range loop or of a loop whose steps use
  /// Step::micro_batches (at the body's end if none comes), nan_data in the batch of a range
  /// loop or of a loop whose steps memoize one (SessionImpl::armed_fault).
  void arm(Step& step, const std::string& fault);
  /// Raises the armed fault that did not land during the body.
  void fire_armed();
  void maybe_snapshot(int64_t index);
  void restore_snapshot(const Step& failed, const std::vector<std::string>& mutated);
  void commit(const Step& step, bool rerun);
  /// The silent-bug checks after step `index` committed (Options::bug_checks).
  void run_checks(int64_t index);
  /// `recovery_us`: failure caught -> the next step starting, when a failure caused the skip.
  void skip(const Step& step, double recovery_us = -1);
  /// Journals `caught_up` when `index` is the failed step a rollback went back from.
  void note_caught_up(int64_t index);

  Session& session_;
  SessionImpl& impl_;
  std::string where_;
  int64_t loop_ = 0;  // this loop's place among the session's loops, in order of start
  int64_t first_ = 0;
  BatchSource* source_ = nullptr;  // a DAIFU_GUARD_EACH loop's elements; null in a DAIFU_GUARD loop
  // Whether a committed step of this loop (or of an earlier run of the loop at the same place)
  // memoized a value / called Step::micro_batches.
  bool memoizes_ = false;
  bool uses_micro_batches_ = false;

  // The rollback window: the step the newest snapshot of this loop was taken at (-1: none
  // yet), and the Step::once values of the steps committed since, so a re-run sees the
  // same data.
  int64_t window_start_ = -1;
  std::map<int64_t, StepAccess::Memos> memos_;
  // The surgery and knob changes of the last repair (what a distributed leader hands on).
  struct LastRepair {
    std::string surgery;
    std::vector<RepairContext::Change> changes;
  } last_repair_;
  // Steps below this index were committed once; running them again is a re-run.
  int64_t high_water_ = 0;
  // A surgery repaired a failure of Step::after_update in the running step: its per-step
  // counts are reset when the step commits, as after a retry of the step.
  bool repaired_after_update_ = false;
  // Failed steps awaiting their retry after a rollback, with the attempt to resume at, and
  // those a surgery chose to skip.
  std::map<int64_t, int64_t> pending_attempt_;
  std::set<int64_t> pending_skip_;
  // Steps skipped since the newest snapshot: a re-run after a rollback passes them again.
  std::set<int64_t> skipped_;
  // After a rollback: the failed step, when its failure was caught, and the step the re-run
  // began at; cleared once the loop is back at the failed step.
  struct CatchUp {
    int64_t failed = -1;
    int64_t from = -1;
    Clock::time_point caught;
  };
  std::optional<CatchUp> catch_up_;
};

}  // namespace daifu::detail
