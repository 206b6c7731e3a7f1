// The firing counters of a daifu::SurgeryRegistry, which bound each surgery per step and per
// run: only the step loop moves them (SurgeryRegistry's one friend). Users read them through
// SurgeryRegistry::candidates() and fired().
#pragma once

#include <daifu/surgery.h>

#include <cstdint>

namespace daifu::detail {

struct SurgeryRegistryAccess {
  /// Counts one firing of `surgery` (per step and per run).
  static void record_fire(SurgeryRegistry& registry, const Surgery& surgery);
  /// The per-step counters restart (when a step commits or is skipped).
  static void reset_step(SurgeryRegistry& registry);
  /// How often `surgery` fired on the current step (0 the first time).
  static int64_t fired_this_step(const SurgeryRegistry& registry, const Surgery& surgery);
};

}  // namespace daifu::detail
