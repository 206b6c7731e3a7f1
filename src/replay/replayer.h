// Options::replay: re-applies what earlier runs in the workplace learned (replay_plan.h) —
// each item only after checking it against where it was recorded: the guard's file:line, the
// step (at_step), the tracked names, the knob's value before the repair, the patch file's
// SHA-256 and the shapes of the modules it changed. An item that does not fit is skipped with
// a warning that says why ("replay_skipped"); one applied is journaled as "replayed".
#pragma once

#include <daifu/options.h>

#include "replay/replay_plan.h"

#include <string>
#include <vector>

namespace daifu {
class Session;
class Step;
}

namespace daifu::detail {

class PatchRunner;
class RepairServices;

class Replayer {
 public:
  Replayer(RepairServices& session, PatchRunner& patches) noexcept : session_(session), patches_(patches) {}

  /// Reads the workplace's history (runs before `current_run`) and plans the items.
  void load(ReplayMode mode, const std::string& current_run);
  bool pending() const noexcept { return !items_.empty(); }

  /// A guard loop at `where` starts (Eager: its items are applied now).
  void loop_started(Session& session, const std::string& where, Step& first);
  /// The loop at `where` is about to run `step` for the first time (AtStep: its items now).
  void step_starting(Session& session, const std::string& where, Step& step);
  /// The session ends: items never reached are journaled as skipped.
  void finish() noexcept;

 private:
  void apply(Session& session, const ReplayItem& item, Step& step);
  void skip(const ReplayItem& item, int64_t step, const std::string& why);
  /// Why the patch item does not fit the tracked modules here; empty if it does.
  std::string shape_mismatch(const ReplayItem& item) const;

  RepairServices& session_;
  PatchRunner& patches_;
  ReplayMode mode_ = ReplayMode::Eager;
  std::vector<ReplayItem> items_;
};

}  // namespace daifu::detail
