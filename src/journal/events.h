// The journal's schema as code: every event daifu writes to journal.jsonl, and the fields its
// line may carry besides those of every line ("event", "step", and "v", "time", "run", which
// Journal::write adds, and "loop", which it adds while a guard loop runs). Writers name events
// through daifu::detail::event::<name>, readers (the history, replay, the CLI) compare with the
// same constants, docs/workplace.md documents each event and field (checked by the test
// journal_events_documented), and the tests check every line they read against this table
// (daifu::testing::events). Header-only.
#pragma once

#include <algorithm>
#include <string_view>

// X(name, "the fields its line may carry, separated by spaces"), in the order a run meets them.
// A long field list is split into adjacent string literals.
#define DAIFU_JOURNAL_EVENTS(X)                                                                         \
  X(run_start, "pid workplace options inject")                                                          \
  X(distributed, "rank world average_gradients")                                                        \
  X(replay_plan, "mode items journal_warnings")                                                         \
  X(resumed, "file loop global_step")                                                                   \
  X(resume_skipped, "reason")                                                                           \
  X(knob_created, "name type value")                                                                    \
  X(knob, "name before after reason")                                                                   \
  X(transform, "name replaced")                                                                         \
  X(loop_start, "where first last each passed")                                                         \
  X(loop_skipped, "where reason")                                                                       \
  X(snapshot, "bytes capture_ms step_ms every")                                                         \
  X(snapshot_failed, "message")                                                                         \
  X(persist_failed, "message")                                                                          \
  X(checks, "ran failing us")                                                                           \
  X(check_failed, "check message")                                                                      \
  X(injected, "attempt model target where permanent elements positions before after")                   \
  X(injection_missed, "attempt target where reason")                                                    \
  X(detection, "attempt detector message value median mad parameter buffer nan inf metric "             \
               "largest first_moment second_moment_sqrt reference")                                               \
  X(failure, "attempt where kind exception_type message matched_by report after_update")                \
  X(rollback, "to_step mutated rerun_steps restore_ms")                                                 \
  X(surgery_declined, "surgery reason")                                                                 \
  X(surgery_failed, "surgery exception_type message")                                                   \
  X(persistent_fault, "attempt detector signature")                                                     \
  X(baseline_reset, "attempt detector value")                                                           \
  X(repair, "attempt surgery action matched changes reason report")                                     \
  X(grow_back, "name before after good_steps shrunk_at lr")                                            \
  X(patch_loading, "path sha256")                                                                       \
  X(patch, "path sha256 action")                                                                        \
  X(patch_refused, "path sha256 reason")                                                                \
  X(patch_failed, "path sha256 reason")                                                                 \
  X(replayed, "from_run from_step where kind surgery mode item name value path sha256 changes")         \
  X(replay_skipped, "from_run from_step where kind surgery item what reason")                           \
  X(pause, "pause attempt kind reason timeout_s")                                                       \
  X(command, "id command args result")                                                                  \
  X(command_rejected, "reason")                                                                         \
  X(pause_end, "pause action by waited_s")                                                              \
  X(peer_failure, "attempt leader ranks kind message surgery action changes rollback")                  \
  X(peers_lost, "attempt rank reason")                                                                  \
  X(resume, "attempt recovery_us rerun_from after_update")                                              \
  X(skip, "attempt recovery_us")                                                                        \
  X(caught_up, "rerun_from rerun_steps recovery_us")                                                    \
  X(unrecovered, "attempt kind reason tried report")                                                    \
  X(metrics, "steps values")                                                                            \
  X(loop_end, "where global_step")                                                                      \
  X(run_end, "status committed_steps failures retries skipped_steps dropped_batches unrecovered "       \
             "failed_checks")                                                                           \
  X(uncaught, "attempt where kind exception_type message matched_by report")                            \
  X(terminate, "attempt where kind exception_type message matched_by report")

namespace daifu::detail {

/// The events' names: write {"event", event::knob}, compare line.event == event::knob.
namespace event {
#define DAIFU_JOURNAL_EVENT_NAME(name, fields) inline constexpr std::string_view name = #name;
DAIFU_JOURNAL_EVENTS(DAIFU_JOURNAL_EVENT_NAME)
#undef DAIFU_JOURNAL_EVENT_NAME
}  // namespace event

struct JournalEvent {
  std::string_view name;
  std::string_view fields;  ///< space-separated

  /// Whether a line of this event may carry `field`.
  constexpr bool has_field(std::string_view field) const noexcept {
    for (std::string_view rest = fields; !rest.empty();) {
      const auto end = std::min(rest.find(' '), rest.size());
      if (rest.substr(0, end) == field) return true;
      rest.remove_prefix(std::min(end + 1, rest.size()));
    }
    return field == "event" || field == "step" || field == "v" || field == "time" || field == "run" ||
           field == "loop";
  }
};

/// Every event, in the order of DAIFU_JOURNAL_EVENTS.
inline constexpr JournalEvent kJournalEvents[] = {
#define DAIFU_JOURNAL_EVENT_ENTRY(name, fields) {#name, fields},
    DAIFU_JOURNAL_EVENTS(DAIFU_JOURNAL_EVENT_ENTRY)
#undef DAIFU_JOURNAL_EVENT_ENTRY
};

/// The event named `name`, or null for a name daifu does not write.
constexpr const JournalEvent* find_journal_event(std::string_view name) noexcept {
  for (const auto& e : kJournalEvents) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

}  // namespace daifu::detail
