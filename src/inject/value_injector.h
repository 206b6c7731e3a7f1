// Value faults in a running step: corrupts tracked parameters before the body, hooks their
// gradients, and applies probe faults when Step::probe reaches their point. Torch-free header
// (the step loop includes it); the work is in value_injector.cpp.
#pragma once

#include <daifu/inject.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace daifu::detail {

class Journal;
class TrackedState;

class ValueInjector {
 public:
  ValueInjector(std::vector<ValueFault> faults, Journal& journal, TrackedState& state);
  ~ValueInjector();

  /// Whether any fault is planned for `step` (any attempt).
  bool planned(int64_t step) const noexcept;
  /// Arms the faults of (step, attempt): a first-attempt fault arms once, also when a
  /// rollback runs its step again. Parameter faults are applied now, parameter-gradient hooks
  /// installed now; probe faults wait for Step::probe. Journals each fault applied ("injected").
  void begin_attempt(int64_t step, int64_t attempt);
  /// Removes the hooks, puts transient parameter faults back, and journals armed faults whose
  /// target never came ("injection_missed"). Safe to call twice.
  void end_attempt() noexcept;
  /// Step::probe: `x`, or `x` with the armed fault that targets `name` applied.
  at::Tensor probe(const std::string& name, const at::Tensor& x);

 private:
  struct Active;
  std::vector<ValueFault> faults_;
  std::set<std::size_t> fired_;  // first-attempt faults already armed once
  Journal& journal_;
  TrackedState& state_;
  std::unique_ptr<Active> active_;  // the armed faults of the running attempt; null if none
};

}  // namespace daifu::detail
