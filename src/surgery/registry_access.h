// The firing counters of a daifu::SurgeryRegistry, which bound each surgery per step and per
// run, and the notice of a committed step: only the step loop moves them (SurgeryRegistry's one
// friend). Users read the counters through SurgeryRegistry::candidates() and fired().
#pragma once

#include <daifu/surgery.h>

#include <cstdint>

namespace daifu::detail {

struct SurgeryRegistryAccess {
  /// Counts one firing of `surgery` (per step and per run).
  static void record_fire(SurgeryRegistry& registry, const Surgery& surgery);
  /// Tells every surgery that the loop committed `step` for the first time (Surgery::committed).
  static void step_committed(SurgeryRegistry& registry, Session& session, int64_t step);
  /// The per-step counters restart (when a step commits or is skipped).
  static void reset_step(SurgeryRegistry& registry);
  /// How often `surgery` fired on the current step (0 the first time).
  static int64_t fired_this_step(const SurgeryRegistry& registry, const Surgery& surgery);
};

}  // namespace daifu::detail
