// The state behind daifu::Session, shared by the session, the step loop and the entry guard.
// Only src/session/ includes this: the repairs see the session through RepairServices.
#pragma once

#include <daifu/classifier.h>
#include <daifu/guard.h>
#include <daifu/inject.h>
#include <daifu/knob.h>
#include <daifu/options.h>
#include <daifu/session.h>
#include <daifu/surgery.h>

#include "check/bug_checks.h"
#include "detect/detectors.h"
#include "distributed/agreement.h"
#include "inject/value_injector.h"
#include "journal/journal.h"
#include "journal/workplace_lock.h"
#include "patch/patch_runner.h"
#include "repair/repair_services.h"
#include "replay/replayer.h"
#include "snapshot/policy.h"
#include "snapshot/snapshot.h"
#include "state/tracked_state.h"
#include "state/tracked_values.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace daifu::detail {

class SessionImpl;
class StepLoop;

/// The RepairServices of one session.
class SessionServices final : public RepairServices {
 public:
  explicit SessionServices(SessionImpl& impl) noexcept : impl_(impl) {}
  const Options& options() const noexcept override;
  const std::filesystem::path& workplace() const noexcept override;
  TrackedState& state() noexcept override;
  Journal& journal() noexcept override;
  int64_t global_step() const noexcept override;
  void keep_changes(bool retake_step_snapshot) override;
  void count_scrubbed_batch() noexcept override;
  void count_dropped_batch() noexcept override;
  KnobBase* find_knob(const std::string& name) noexcept override;
  void collect_knob_changes(RepairContext* context) noexcept override;

 private:
  SessionImpl& impl_;
};

class SessionImpl {
 public:
  explicit SessionImpl(Options opts);

  Options options;
  /// Options::on_unrecovered and pause_timeout, with their environment defaults resolved.
  OnUnrecovered on_unrecovered = OnUnrecovered::Rethrow;
  std::chrono::milliseconds pause_timeout{};
  /// Options::replay and replay_mode, with $DAIFU_REPLAY resolved; nullopt: no replay.
  std::optional<ReplayMode> replay;
  std::filesystem::path workplace;
  WorkplaceLock workplace_lock;  // before anything that writes the workplace
  Journal journal;
  Classifier classifier;
  SurgeryRegistry surgeries;
  TrackedState state;
  TrackedValues values;  // Session::track_value
  Snapshot snapshot;
  SnapshotPolicy policy;
  SnapshotStats snapshot_stats;
  bool snapshot_requested = false;
  std::optional<PersistentStore> store;  // with Options::persist
  /// Where a resumed run picks up: the guard loop (by order of start) and its step.
  struct ResumePoint {
    int64_t loop = 0;
    int64_t step = 0;
    std::optional<BatchSource::Position> each_position;  // in a DAIFU_GUARD_EACH loop
  };
  std::optional<ResumePoint> resume_point;
  bool resume_checked = false;
  int64_t loops_started = 0;
  /// The index the next DAIFU_GUARD_EACH loop's first step gets: past every step the last one ran.
  int64_t next_each_step = 0;
  /// The guard loops (by file:line) whose committed steps memoized a value / used
  /// Step::micro_batches, in this session: where an injected fault lands (StepLoop::arm).
  std::set<std::string> memoizing_loops, micro_batching_loops;
  /// Restores the newest persisted snapshot, if any (Options::resume), and sets resume_point.
  void resume_from_disk();
  std::map<std::string, std::unique_ptr<KnobBase>> knobs;
  InjectionPlan plan;  // crash faults (injection_for) and value faults (injector)
  ValueInjector injector{plan.values, journal, state};
  Detectors detectors{options.detectors(), journal, state};
  BugChecks checks{options.bug_checks(), journal, state};
  /// With Options::distributed: the step agreement with the other ranks; null otherwise.
  std::unique_ptr<Agreement> agreement;
  SessionServices services{*this};
  PatchRunner patches{services};
  Replayer replayer{services, patches};
  /// Session::transform functions by name.
  struct Transform {
    std::function<at::Tensor(const at::Tensor&)> fn;
  };
  std::map<std::string, Transform> transforms;

  int64_t global_step = 0;
  SessionStats stats;
  std::vector<Incident> incidents;
  bool unrecovered = false;
  /// The thread running this session's guard loop; none while no loop runs. A session runs
  /// one loop at a time: a second one, nested in a step or on another thread, is refused.
  std::atomic<std::thread::id> loop_thread{};

  /// While a repair runs, knob changes are also noted in its context, for its journal line.
  RepairContext* active_repair = nullptr;
  /// The guard loop running a step now (Step::after_update repairs through it); null otherwise.
  StepLoop* running_loop = nullptr;
  /// The step being run, for knob lines (-1 outside a guard loop).
  int64_t current_step = -1;

  /// Metric values reported since the last "metrics" line, one row per committed step.
  struct MetricRow {
    int64_t step;
    std::vector<std::pair<std::string, double>> values;
  };
  std::vector<std::pair<std::string, double>> step_metrics;
  std::vector<MetricRow> metric_rows;
  void flush_metrics() noexcept;

  /// The injection planned for (step, attempt), if any. A first-attempt fault fires once,
  /// also when a rollback runs its step again.
  const Injection* injection_for(int64_t step, int64_t attempt) noexcept;
  std::set<std::size_t> injections_fired;
  /// A crash fault of the running attempt that lands where a real one would (Step::memoized,
  /// Step::entering_micro_batches); the step loop raises it after the body if it did not land.
  std::optional<std::string> armed_fault;
};

/// The one door from a daifu::Session to its SessionImpl (a friend of Session).
struct SessionAccess {
  static SessionImpl& impl(Session& session) noexcept { return *session.impl_; }
};

}  // namespace daifu::detail
