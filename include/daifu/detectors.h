// Silent-fault detectors: checks at the step boundary that turn a value no correct step
// produces into a daifu::FaultDetected failure, which is rolled back and run again like a
// crash (docs/silent-faults.md). Set with Options::detectors().
#pragma once

#include <daifu/export.h>

#include <cstdint>
#include <string>

namespace daifu {

/// Which detectors run and how sensitive the spike detectors are. The default set (the
/// non-finite and spike checks) costs a few scalar comparisons and one norm per floating buffer
/// per step, one pass over the parameters every state_check_every() steps, plus one pass over
/// the gradients every grad_check_every() steps that call Step::before_update(); adam_moments
/// is off by default.
/// Example:
///   daifu::Options().detectors(daifu::DetectorOptions().adam_moments(true).spike_ratio(1e3))
class DAIFU_API DetectorOptions {
 public:
  /// Every value given to Session::report in the step must be finite (checked at the step end).
  DetectorOptions& nonfinite_loss(bool on) { nonfinite_loss_ = on; return *this; }
  bool nonfinite_loss() const noexcept { return nonfinite_loss_; }

  /// At the step end: every floating buffer of the tracked modules (batch norm's running
  /// statistics) must be finite. A huge activation can leave training itself finite (batch
  /// norm's batch statistics absorb it) and still make a running variance infinite for good.
  DetectorOptions& nonfinite_buffers(bool on) { nonfinite_buffers_ = on; return *this; }
  bool nonfinite_buffers() const noexcept { return nonfinite_buffers_; }

  /// In Step::before_update() (see grad_check_every): every gradient of the tracked parameters
  /// must be finite.
  DetectorOptions& nonfinite_grads(bool on) { nonfinite_grads_ = on; return *this; }
  bool nonfinite_grads() const noexcept { return nonfinite_grads_; }

  /// In Step::before_update() (see grad_check_every): the total gradient norm must not spike
  /// (see spike_ratio).
  DetectorOptions& grad_spikes(bool on) { grad_spikes_ = on; return *this; }
  bool grad_spikes() const noexcept { return grad_spikes_; }

  /// At the step end: the reported metric loss_metric() must not spike.
  DetectorOptions& loss_spikes(bool on) { loss_spikes_ = on; return *this; }
  bool loss_spikes() const noexcept { return loss_spikes_; }
  DetectorOptions& loss_metric(std::string name) { loss_metric_ = std::move(name); return *this; }
  const std::string& loss_metric() const noexcept { return loss_metric_; }

  /// At the step end: the largest |value| of the tracked parameters must be finite and must
  /// not spike: a weight that a fault set to 1e7 can leave every gradient and loss ordinary
  /// (a saturated output) while training degrades. A state check (state_check_every): one pass
  /// over the parameters every few steps.
  DetectorOptions& param_spikes(bool on) { param_spikes_ = on; return *this; }
  bool param_spikes() const noexcept { return param_spikes_; }

  /// At the step end: the largest |first moment| and sqrt(second moment) of every tracked
  /// Adam/AdamW optimizer must be finite and must not spike (the ISCA'23 mitigation). A state
  /// check (state_check_every): one pass over the moments every few steps.
  DetectorOptions& adam_moments(bool on) { adam_moments_ = on; return *this; }
  bool adam_moments() const noexcept { return adam_moments_; }

  /// The state checks (param_spikes, adam_moments) look at values that stay until something
  /// overwrites them, so they need not run every step: they run at the end of each step until
  /// warmup() steps ran them, then of every k-th step (step index + 1 a multiple of k), of a
  /// loop's last step, and of every step in a distributed session. A snapshot is never taken of
  /// a state they have not seen (it is measured first, and a faulty one is not captured), so a
  /// rollback restores a checked state. A fault they catch is at most k - 1 steps old, and its
  /// detection always restores the snapshot. 1: every step.
  DetectorOptions& state_check_every(int64_t k) { state_check_every_ = k; return *this; }
  int64_t state_check_every() const noexcept { return state_check_every_; }

  /// The gradient checks (nonfinite_grads, grad_spikes) in Step::before_update(). Every call
  /// checks the gradients of the 1-D parameters (biases, normalization scales; their own norm
  /// and window): a bias's gradient is its layer's output gradient summed over the batch, so a
  /// fault in any layer's output or output gradient shows there and in the layers before it.
  /// Every gradient (one pass over all of them, more than 0.1 % of a short step) is checked
  /// until warmup() steps did, then at every k-th step (step index + 1 a multiple of k: the
  /// state checks' steps when k is the same), and at every step re-run after any detection, up
  /// to the detecting step (in a distributed session each rank checks its own gradients before
  /// they are averaged). A fault in a weight's own gradient at a step in between reaches the
  /// weight, where the loss, the parameter bound or Adam's moments may find it later (a gradient
  /// detection looks at the state first); the rollback then re-runs the steps with every check
  /// on, so the step that brought it is the one blamed. 1: every gradient at every step.
  DetectorOptions& grad_check_every(int64_t k) { grad_check_every_ = k; return *this; }
  int64_t grad_check_every() const noexcept { return grad_check_every_; }

  /// A value x spikes when both x - median > (spike_ratio - 1) * |median| and
  /// x - median > spike_mads * MAD, over the last window() values (one per committed step; for
  /// the state checks and the all-gradient norm, per committed step that ran them), once
  /// warmup() values have been seen.
  /// Before that, from 3 values on, the gradient norm and the state checks' values spike above
  /// spike_ratio times the largest value so far.
  DetectorOptions& spike_ratio(double r) { spike_ratio_ = r; return *this; }
  double spike_ratio() const noexcept { return spike_ratio_; }
  DetectorOptions& spike_mads(double k) { spike_mads_ = k; return *this; }
  double spike_mads() const noexcept { return spike_mads_; }
  DetectorOptions& window(int64_t steps) { window_ = steps; return *this; }
  int64_t window() const noexcept { return window_; }
  DetectorOptions& warmup(int64_t steps) { warmup_ = steps; return *this; }
  int64_t warmup() const noexcept { return warmup_; }

  /// All detectors off.
  static DetectorOptions none() {
    return DetectorOptions().nonfinite_loss(false).nonfinite_buffers(false).nonfinite_grads(false).grad_spikes(false).loss_spikes(false).param_spikes(false);
  }

 private:
  bool nonfinite_loss_ = true;
  bool nonfinite_buffers_ = true;
  bool nonfinite_grads_ = true;
  bool grad_spikes_ = true;
  bool loss_spikes_ = true;
  bool param_spikes_ = true;
  std::string loss_metric_ = "loss";
  bool adam_moments_ = false;
  int64_t state_check_every_ = 20;
  int64_t grad_check_every_ = 20;
  double spike_ratio_ = 100;
  double spike_mads_ = 20;
  int64_t window_ = 100;
  int64_t warmup_ = 20;
};

}  // namespace daifu
