// Options for a daifu::Session, as a builder in the style of torch::optim::AdamOptions.
#pragma once

#include <daifu/bug_checks.h>
#include <daifu/detectors.h>
#include <daifu/distributed.h>
#include <daifu/export.h>
#include <daifu/inject.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace daifu {

/// What a guard does with a failure no surgery repaired.
enum class OnUnrecovered {
  Rethrow,  ///< throw daifu::Unrecovered out of the guard (the default)
  Pause,    ///< write <workplace>/paused.json and wait, bounded by pause_timeout(), for a hot
            ///< patch or a command (daifu apply/set/retry/skip/abort); see docs/hot-patching.md
};

/// When Options::replay re-applies a recorded repair (docs/replay.md).
enum class ReplayMode {
  Eager,   ///< when the guard loop it was recorded in starts, so the failure never happens
  AtStep,  ///< when that guard loop reaches the step it was recorded at, before the step runs
};

/// Example:
///   daifu::Session session(daifu::Options()
///                              .workplace("runs/exp1/daifu_workplace")
///                              .max_attempts(4)
///                              .inject("transient@12"));
/// Validated when the Session is constructed (daifu::Error on nonsense).
class DAIFU_API Options {
 public:
  /// Folder for journal.jsonl, experiment_record.log and failures/. Created if missing.
  Options& workplace(std::string path) { workplace_ = std::move(path); return *this; }
  const std::string& workplace() const noexcept { return workplace_; }

  /// Attempts per step, the first included (>= 1). After that the step escalates.
  Options& max_attempts(int64_t n) { max_attempts_ = n; return *this; }
  int64_t max_attempts() const noexcept { return max_attempts_; }

  /// Re-apply repairs recorded in the workplace by earlier runs: knob values they changed and
  /// patches they ran, each checked against where it was recorded (docs/replay.md). Unset:
  /// $DAIFU_REPLAY ("1"/"eager", "at_step", "0"), else off.
  Options& replay(bool on) { replay_ = on; return *this; }
  const std::optional<bool>& replay() const noexcept { return replay_; }
  Options& replay_mode(ReplayMode mode) { replay_mode_ = mode; return *this; }
  const std::optional<ReplayMode>& replay_mode() const noexcept { return replay_mode_; }

  /// Retries the built-in transient surgery grants one step (>= 0).
  Options& transient_retries(int64_t n) { transient_retries_ = n; return *this; }
  int64_t transient_retries() const noexcept { return transient_retries_; }

  /// Batches the built-in data_or_code surgery may drop in the whole run (>= 0; 0 turns it
  /// off). When a tensor_mismatch, exceptional_data or numeric_fault failure is left unrepaired
  /// by the other surgeries, it takes the batch for bad data: a memoized batch is skipped, a
  /// step that memoized nothing is retried once (a stream yields its next batch); if the next
  /// batch fails the same way it is the code, and the step escalates (docs/surgeries.md).
  Options& max_dropped_batches(int64_t n) { max_dropped_batches_ = n; return *this; }
  int64_t max_dropped_batches() const noexcept { return max_dropped_batches_; }

  /// Wait before the second transient retry (the first is immediate); doubled per retry,
  /// with +-50% jitter.
  Options& transient_backoff(std::chrono::microseconds d) { transient_backoff_ = d; return *this; }
  std::chrono::microseconds transient_backoff() const noexcept { return transient_backoff_; }

  /// Upper bound of any single backoff wait. Every backoff option is in [0, 1 hour].
  Options& max_backoff(std::chrono::microseconds d) { max_backoff_ = d; return *this; }
  std::chrono::microseconds max_backoff() const noexcept { return max_backoff_; }

  /// Make libtorch's c10::Error skip its eager backtrace symbolization (~4 ms per throw);
  /// daifu captures the throw site itself. Affects c10::Error::what() process-wide.
  Options& fast_throws(bool on) { fast_throws_ = on; return *this; }
  bool fast_throws() const noexcept { return fast_throws_; }

  /// Take a snapshot of the tracked state every `k` steps; 0 (the default) chooses k from the
  /// measured snapshot and step times so that snapshots cost at most overhead_budget().
  Options& snapshot_every(int64_t k) { snapshot_every_ = k; return *this; }
  int64_t snapshot_every() const noexcept { return snapshot_every_; }

  /// Fraction of training time automatic snapshots may take (default 0.004 = 0.4%).
  Options& overhead_budget(double fraction) { overhead_budget_ = fraction; return *this; }
  double overhead_budget() const noexcept { return overhead_budget_; }

  /// Upper bound of the automatic k: the steps a rollback may have to re-run, and the steps
  /// whose Step::once values are kept for that.
  Options& max_rollback_steps(int64_t n) { max_rollback_steps_ = n; return *this; }
  int64_t max_rollback_steps() const noexcept { return max_rollback_steps_; }

  /// Keep the newest snapshot in <workplace>/snapshots, in a file that a process killed at any
  /// instant leaves valid (two slots, checksummed).
  Options& persist(bool on) { persist_ = on; return *this; }
  bool persist() const noexcept { return persist_; }

  /// At the first guarded loop, restore the tracked state from the newest valid persisted
  /// snapshot (if there is one) and continue from the step it was taken at.
  Options& resume(bool on) { resume_ = on; return *this; }
  bool resume() const noexcept { return resume_; }

  /// The int64 knob the out-of-memory surgery halves when the failed step did not use
  /// Step::micro_batches() (default "batch_size"). Give it a floor with Knob::min().
  Options& batch_knob(std::string name) { batch_knob_ = std::move(name); return *this; }
  const std::string& batch_knob() const noexcept { return batch_knob_; }

  /// A double knob holding the learning rate, scaled linearly when the out-of-memory surgery
  /// shrinks batch_knob(). Empty (the default): the learning rate is left alone.
  Options& lr_knob(std::string name) { lr_knob_ = std::move(name); return *this; }
  const std::string& lr_knob() const noexcept { return lr_knob_; }

  /// After this many committed steps without another out-of-memory failure, a knob the
  /// out-of-memory surgery shrank is doubled back toward its value before the shrink (the
  /// learning rate with the batch), one doubling per such stretch. A grown value that runs out
  /// of memory again doubles the wait; after 3 such failures the knob stays where it is. Each
  /// growth is journaled ("grow_back"). 0: a shrunk knob stays shrunk. Default 200. Off in a
  /// distributed session (the ranks' knobs must agree). docs/surgeries.md#out_of_memory.
  Options& oom_grow_back(int64_t good_steps) { oom_grow_back_ = good_steps; return *this; }
  int64_t oom_grow_back() const noexcept { return oom_grow_back_; }

  /// Folders under which the path surgery may create a missing output directory. Empty (the
  /// default): the working directory and the workplace.
  Options& allowed_roots(std::vector<std::string> roots) { allowed_roots_ = std::move(roots); return *this; }
  const std::vector<std::string>& allowed_roots() const noexcept { return allowed_roots_; }

  /// Device contention: waits (exponential backoff from contention_backoff(), jitter, each at
  /// most max_backoff()) before the tracked state moves to the next device of the "device" knob.
  Options& contention_waits(int64_t n) { contention_waits_ = n; return *this; }
  int64_t contention_waits() const noexcept { return contention_waits_; }
  Options& contention_backoff(std::chrono::microseconds d) { contention_backoff_ = d; return *this; }
  std::chrono::microseconds contention_backoff() const noexcept { return contention_backoff_; }

  /// Device contention: a cheap check that the busy device can be used now (for example: try
  /// to take it and let go). With one, each wait polls it (after 1 ms, then at most every 4 ms)
  /// and retries the step as soon as it says free, instead of sleeping out the whole backoff.
  /// It is called on the guard's thread and should return within a millisecond; one that
  /// throws counts as "busy". Unset (the default): the waits sleep their backoff.
  Options& device_probe(std::function<bool()> probe) { device_probe_ = std::move(probe); return *this; }
  const std::function<bool()>& device_probe() const noexcept { return device_probe_; }

  /// Whether device contention may move training to the CPU when no other GPU is free.
  Options& cpu_fallback(bool on) { cpu_fallback_ = on; return *this; }
  bool cpu_fallback() const noexcept { return cpu_fallback_; }

  /// Fault-injection plan (docs/injection.md, docs/silent-faults.md). Unset: taken from
  /// $DAIFU_INJECT.
  Options& inject(std::string plan) { inject_ = std::move(plan); return *this; }
  const std::optional<std::string>& inject() const noexcept { return inject_; }
  /// Adds a value fault, in addition to the plan's.
  Options& inject(ValueFault fault) { value_faults_.push_back(std::move(fault)); return *this; }
  const std::vector<ValueFault>& value_faults() const noexcept { return value_faults_; }

  /// Silent-fault detectors (docs/silent-faults.md); the default set is on.
  Options& detectors(DetectorOptions d) { detectors_ = std::move(d); return *this; }
  const DetectorOptions& detectors() const noexcept { return detectors_; }

  /// Opt-in checks for silent software bugs (docs/silent-faults.md#silent-bug-checks); off
  /// unless BugCheckOptions::every() is set.
  Options& bug_checks(BugCheckOptions c) { bug_checks_ = std::move(c); return *this; }
  const BugCheckOptions& bug_checks() const noexcept { return bug_checks_; }

  /// Data-parallel training over a c10d process group (docs/distributed.md); off unless
  /// DistributedOptions::group() is set.
  Options& distributed(DistributedOptions d) { distributed_ = d; return *this; }
  const DistributedOptions& distributed() const noexcept { return distributed_; }

  /// What to do when no surgery repairs a failure. Unset: $DAIFU_ON_UNRECOVERED ("rethrow" or
  /// "pause"), else Rethrow. A fatal failure, or one that left tracked state half-updated with
  /// no snapshot to restore, is always rethrown.
  Options& on_unrecovered(OnUnrecovered what) { on_unrecovered_ = what; return *this; }
  const std::optional<OnUnrecovered>& on_unrecovered() const noexcept { return on_unrecovered_; }

  /// How long one pause waits for an instruction before the failure is rethrown (> 0).
  /// Unset: $DAIFU_PAUSE_TIMEOUT (seconds), else one hour.
  Options& pause_timeout(std::chrono::milliseconds d) { pause_timeout_ = d; return *this; }
  const std::optional<std::chrono::milliseconds>& pause_timeout() const noexcept { return pause_timeout_; }

  /// Echo the human-readable record to stderr as well as experiment_record.log.
  Options& echo(bool on) { echo_ = on; return *this; }
  bool echo() const noexcept { return echo_; }

  /// Steps between two "metrics" journal lines carrying the values given to report().
  Options& metrics_every(int64_t n) { metrics_every_ = n; return *this; }
  int64_t metrics_every() const noexcept { return metrics_every_; }

 private:
  std::string workplace_ = "daifu_workplace";
  int64_t max_attempts_ = 4;
  std::optional<bool> replay_;
  std::optional<ReplayMode> replay_mode_;
  int64_t transient_retries_ = 3;
  int64_t max_dropped_batches_ = 100;
  int64_t oom_grow_back_ = 200;
  std::chrono::microseconds transient_backoff_{1000};
  std::chrono::microseconds max_backoff_{2'000'000};
  bool fast_throws_ = true;
  int64_t snapshot_every_ = 0;
  double overhead_budget_ = 0.004;
  int64_t max_rollback_steps_ = 100;
  bool persist_ = false;
  bool resume_ = false;
  std::string batch_knob_ = "batch_size";
  std::string lr_knob_;
  std::vector<std::string> allowed_roots_;
  int64_t contention_waits_ = 3;
  std::chrono::microseconds contention_backoff_{100'000};
  std::function<bool()> device_probe_;
  bool cpu_fallback_ = false;
  std::optional<std::string> inject_;
  std::vector<ValueFault> value_faults_;
  DetectorOptions detectors_;
  BugCheckOptions bug_checks_;
  DistributedOptions distributed_;
  std::optional<OnUnrecovered> on_unrecovered_;
  std::optional<std::chrono::milliseconds> pause_timeout_;
  bool echo_ = false;
  int64_t metrics_every_ = 50;
};

}  // namespace daifu
