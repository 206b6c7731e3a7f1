// Opt-in checks for silent software bugs (seed 003): state that does not survive save/reload,
// an optimizer that trains the wrong parameters, a learning-rate knob that never reaches the
// optimizer, memory that grows across identical steps. They run after a committed step every
// every() steps; a failed check is journaled ("check_failed") and warned about in the record,
// never thrown: training goes on unchanged (docs/silent-faults.md#silent-bug-checks).
#pragma once

#include <daifu/export.h>
#include <daifu/torch_fwd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace daifu {

/// The save/reload round trip of a tracked module checked end to end: the module is saved
/// (Module::save), loaded (Module::load) into a module make() builds, and the two must hold
/// the same tensors and give the same loss().
struct DAIFU_API RoundTrip {
  std::string module;  ///< the name the module is tracked under
  /// Builds a new module of the same architecture, as the program does before loading a
  /// checkpoint.
  std::function<std::shared_ptr<torch::nn::Module>()> make;
  /// Optional: the loss of one fixed batch on a module, called for the tracked module and for
  /// the reloaded one, both in eval mode under torch::NoGradGuard (their modes are put back).
  /// It catches state the forward pass uses but save() does not write: a tensor member that
  /// is not a registered parameter or buffer. Must be deterministic.
  std::function<double(torch::nn::Module&)> loss;
};

/// Which checks run and when. Example:
///   daifu::Options().bug_checks(daifu::BugCheckOptions().every(100).round_trip({"model",
///       [] { return std::make_shared<NetImpl>(); },
///       [&](torch::nn::Module& m) { return loss_of(static_cast<NetImpl&>(m), x, y); }}))
class DAIFU_API BugCheckOptions {
 public:
  /// Run the checks after each committed step whose index + 1 is a multiple of n; 0 (the
  /// default): never. Re-runs after a rollback are not checked again.
  BugCheckOptions& every(int64_t n) { every_ = n; return *this; }
  int64_t every() const noexcept { return every_; }

  /// Every tracked optimizer (state and each param group's learning rate) and tensor,
  /// serialized with torch::serialize and loaded back, must be bitwise what was saved.
  BugCheckOptions& serialization(bool on) { serialization_ = on; return *this; }
  bool serialization() const noexcept { return serialization_; }
  /// Adds a module round trip (see RoundTrip); runs when serialization() is on.
  BugCheckOptions& round_trip(RoundTrip check) { round_trips_.push_back(std::move(check)); return *this; }
  const std::vector<RoundTrip>& round_trips() const noexcept { return round_trips_; }

  /// The tracked optimizers together hold exactly the parameters of the tracked modules that
  /// require gradients, each once: none stale (a replaced layer's old weights), none missing
  /// (the new layer), none twice.
  BugCheckOptions& optimizer_params(bool on) { optimizer_params_ = on; return *this; }
  bool optimizer_params() const noexcept { return optimizer_params_; }

  /// When the double knob Options::lr_knob() changed since the last check, every param group
  /// of every tracked optimizer must have a different learning rate than it had then.
  BugCheckOptions& lr_reaches_optimizer(bool on) { lr_reaches_optimizer_ = on; return *this; }
  bool lr_reaches_optimizer() const noexcept { return lr_reaches_optimizer_; }

  /// Resident memory (Linux: /proc/self/statm) must not grow steadily: the check fails when
  /// it rose at each of the last memory_window() checks, by more than memory_growth_bytes()
  /// over them. Reported once per such window.
  BugCheckOptions& memory_growth(bool on) { memory_growth_ = on; return *this; }
  bool memory_growth() const noexcept { return memory_growth_; }
  BugCheckOptions& memory_window(int64_t checks) { memory_window_ = checks; return *this; }
  int64_t memory_window() const noexcept { return memory_window_; }
  BugCheckOptions& memory_growth_bytes(int64_t bytes) { memory_growth_bytes_ = bytes; return *this; }
  int64_t memory_growth_bytes() const noexcept { return memory_growth_bytes_; }

 private:
  int64_t every_ = 0;
  bool serialization_ = true;
  std::vector<RoundTrip> round_trips_;
  bool optimizer_params_ = true;
  bool lr_reaches_optimizer_ = true;
  bool memory_growth_ = true;
  int64_t memory_window_ = 8;
  int64_t memory_growth_bytes_ = int64_t{64} << 20;
};

}  // namespace daifu
