// The silent-fault detectors of a session (DetectorOptions): gradient checks in
// Step::before_update(), metric and optimizer-moment checks at the end of each attempt. A
// detection is journaled ("detection") and thrown as daifu::FaultDetected inside the step.
// Torch-free header; the work is in detectors.cpp.
#pragma once

#include <daifu/detectors.h>

#include "detect/robust_window.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace daifu::detail {

class Journal;
class TrackedState;

class Detectors {
 public:
  Detectors(DetectorOptions options, Journal& journal, TrackedState& state);
  ~Detectors();

  /// An attempt of `step` begins: values measured by an earlier attempt are dropped.
  void begin_attempt(int64_t step, int64_t attempt) noexcept;
  /// Step::before_update(): non-finite gradients and gradient-norm spikes.
  void before_update();
  /// After the body returned: non-finite metrics and buffers, loss spikes; the state checks
  /// (parameter spikes, Adam moments) when `snapshot_next` (a snapshot is due before the next
  /// step) or at every state_check_every()-th step.
  void end_attempt(const std::vector<std::pair<std::string, double>>& metrics, bool snapshot_next);
  /// The step committed: the values it measured join the running statistics.
  void commit(int64_t step);

 private:
  struct Parameters;
  /// Journals a "detection" line and throws daifu::FaultDetected.
  [[noreturn]] void detected(const std::string& detector, const std::string& message, nlohmann::json details);
  /// Throws if `value` spikes against `window`; `what` names the value in the message.
  /// `bound_warmup`: RobustWindow::spike's bound in the warm-up applies.
  void check_spike(const std::string& detector, const std::string& what, double value, const RobustWindow& window,
                   bool bound_warmup = false);
  void check_buffers();
  void check_params();
  void check_adam_moments();
  /// After `detector` (param_spike, adam_moments) fired: if the state this attempt starts from
  /// (restored by the rollback) still spikes, no rollback removes it and every later step
  /// would fire again: its value becomes the window's only one, journaled once
  /// ("baseline_reset"). Else nothing; the attempt's own checks judge it as before.
  void accept_inherited(const std::string& detector);

  DetectorOptions options_;
  Journal& journal_;
  TrackedState& state_;
  std::unique_ptr<Parameters> parameters_;
  int64_t step_ = 0, attempt_ = 0;
  std::string recheck_;  // the state detector that fired last, until the next attempt begins
  RobustWindow grad_norms_, losses_, param_magnitudes_, first_moments_, second_moments_;
  // Values of the running attempt, recorded when it commits.
  std::optional<double> grad_norm_, loss_, param_magnitude_, first_moment_, second_moment_;
};

}  // namespace daifu::detail
