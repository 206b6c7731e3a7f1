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

/// Whether `detector` is a state check's (param_spike, nonfinite_param, adam_moments): its fault
/// is in the tracked state and may be up to DetectorOptions::state_check_every() - 1 steps old.
bool is_state_check(const std::string& detector) noexcept;

class Detectors {
 public:
  Detectors(DetectorOptions options, Journal& journal, TrackedState& state);
  ~Detectors();

  /// An attempt of `step` begins: values measured by an earlier attempt are dropped.
  void begin_attempt(int64_t step, int64_t attempt) noexcept;
  /// Step::before_update(): non-finite gradients and gradient-norm spikes of the 1-D parameters
  /// (biases, normalization scales) at every call; of all parameters in the warm-up, at every
  /// grad_check_every()-th step, and in a re-run up to a detection's step.
  void before_update();
  /// After the body returned: non-finite metrics and buffers, loss spikes; the state checks
  /// (parameter spikes, Adam moments) in the warm-up, at every state_check_every()-th step, when
  /// state_clean_now() found the state faulty, in a re-run up to a detection's step, and if
  /// `every_step`.
  void end_attempt(const std::vector<std::pair<std::string, double>>& metrics, bool every_step);
  /// Before a snapshot: whether the state the state checks would see now is clean, measured only
  /// if they have not seen it (the last committed attempt skipped them). If not, the snapshot
  /// must not be taken, and this attempt's end runs the checks, which detect it. Never throws.
  bool state_clean_now() noexcept;
  /// A snapshot was restored: its state is one the checks have seen. After a param_spike or
  /// adam_moments detection, a restored state that still spikes cannot be cleaned by any
  /// rollback: its value becomes the detector's only reference, journaled once
  /// ("baseline_reset"), instead of a detection at every later step.
  void state_restored() noexcept;
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
  /// The largest |value| of the tracked floating parameters; nullopt without any.
  std::optional<double> largest_param();
  /// Adam's largest |first moment| and sqrt(second moment); nullopt without an Adam optimizer.
  std::optional<std::pair<double, double>> largest_moments();
  /// Whether `value` spikes against `window` with the options' ratio, MADs and warm-up.
  bool spikes(double value, const RobustWindow& window, bool bound_warmup = false) const;
  /// state_restored()'s work after `detector` fired.
  void accept_inherited(const std::string& detector);
  bool state_checks_on() const noexcept { return options_.param_spikes() || options_.adam_moments(); }

  DetectorOptions options_;
  Journal& journal_;
  TrackedState& state_;
  std::unique_ptr<Parameters> parameters_;
  int64_t step_ = 0, attempt_ = 0;
  std::string recheck_;  // the state detector that fired, until a restore or the next attempt
  bool state_checked_ = true;       // the state checks have seen the state as it is
  bool force_state_check_ = false;  // state_clean_now() found it faulty: check at this attempt's end
  bool ran_state_checks_ = false;   // in the running attempt
  int64_t state_checks_committed_ = 0;  // committed attempts that ran them (the warm-up)
  int64_t dense_until_ = -1;  // every check runs at every step up to this one (a re-run)
  bool in_before_update_ = false;  // a detection now looks at the state first
  // vector_norms_: the gradient norm of the 1-D parameters, measured at every before_update().
  RobustWindow grad_norms_, vector_norms_, losses_, param_magnitudes_, first_moments_, second_moments_;
  // Values of the running attempt, recorded when it commits.
  std::optional<double> grad_norm_, vector_norm_, loss_, param_magnitude_, first_moment_, second_moment_;
};

}  // namespace daifu::detail
