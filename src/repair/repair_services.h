// The session as the repairs see it. Surgeries, hot patches and replay reach the state, the
// journal and the counters of the session that runs them through this interface, never through
// the session's private struct: session/ implements it, the folders below session/ see only it.
// A repair gets it from its RepairContext (services(context)) or at construction.
#pragma once

#include <daifu/options.h>
#include <daifu/surgery.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace daifu::detail {

class Journal;
class KnobBase;
class TrackedState;

class RepairServices {
 public:
  virtual const Options& options() const noexcept = 0;
  /// The workplace folder (Options::workplace, resolved).
  virtual const std::filesystem::path& workplace() const noexcept = 0;
  /// The tracked modules, optimizers and tensors, and whether this step changed them.
  virtual TrackedState& state() noexcept = 0;
  virtual Journal& journal() noexcept = 0;
  /// Steps the session committed or skipped so far, across its guard loops.
  virtual int64_t global_step() const noexcept = 0;

  /// Makes what a repair changed in the tracked objects (a layer replaced or widened, the
  /// optimizer's parameters or learning rate) survive later rollbacks: a fresh snapshot is
  /// taken at the start of the next step; with `retake_step_snapshot` (the failed step had been
  /// rolled back, so the change was made on the restored state) the step's snapshot is also
  /// retaken now, from the state as it is.
  virtual void keep_changes(bool retake_step_snapshot) = 0;
  /// Counts a batch whose values a surgery replaced (SessionStats::scrubbed_batches).
  virtual void count_scrubbed_batch() noexcept = 0;
  /// Counts a batch a surgery dropped as bad data (SessionStats::dropped_batches).
  virtual void count_dropped_batch() noexcept = 0;

  /// The knob named `name`, or null when the program made none.
  virtual KnobBase* find_knob(const std::string& name) noexcept = 0;
  /// While `context` is not null, every knob change is also noted in it (RepairContext::note:
  /// the repair's journal line lists them); pass null to stop.
  virtual void collect_knob_changes(RepairContext* context) noexcept = 0;

 protected:
  ~RepairServices() = default;
};

/// The services of the session `context` repairs a step of.
RepairServices& services(RepairContext& context) noexcept;

}  // namespace daifu::detail
