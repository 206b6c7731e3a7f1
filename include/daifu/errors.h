// Exceptions that daifu itself throws to the user.
#pragma once

#include <daifu/export.h>
#include <daifu/failure.h>

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace daifu {

/// A usage error: a bad option, an unwritable workplace, a knob of the wrong type.
class DAIFU_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Thrown inside a step by a silent-fault detector (docs/silent-faults.md): a value that a
/// correct step does not produce (a NaN loss, an infinite gradient, a 1e17x gradient-norm
/// spike). Classified as FailureKind::NumericFault: the step is rolled back and run again,
/// and a fault that repeats the same way is treated as persistent.
class DAIFU_API FaultDetected : public Error {
 public:
  /// what() is "daifu detector <detector>: <message>".
  FaultDetected(std::string detector, const std::string& message);
  /// "nonfinite_loss", "nonfinite_buffer", "nonfinite_grad", "grad_spike", "loss_spike" or
  /// "adam_moments".
  const std::string& detector() const noexcept { return detector_; }

 private:
  std::string detector_;
};

/// Thrown inside a step of a distributed session (Options::distributed) when another rank's
/// attempt of the same step failed: from Step::before_update(), or at the step's end. The
/// guard rolls back and applies the failing rank's repair; programs need not catch it.
class DAIFU_API PeerFailed : public Error {
 public:
  PeerFailed(std::vector<int64_t> ranks, const std::string& message) : Error(message), ranks_(std::move(ranks)) {}
  /// The ranks whose attempt failed.
  const std::vector<int64_t>& ranks() const noexcept { return ranks_; }

 private:
  std::vector<int64_t> ranks_;
};

/// Thrown out of DAIFU_GUARD when a step could not be repaired. The original exception is
/// nested (std::rethrow_if_nested / nested_ptr()); failure() is its classified form.
class DAIFU_API Unrecovered : public std::runtime_error, public std::nested_exception {
 public:
  /// Must be constructed while the original exception is being handled (inside a catch).
  Unrecovered(const std::string& message, Failure failure, std::string report_path);

  const Failure& failure() const noexcept { return failure_; }
  /// Path of the failure report in the workplace (failures/NNNN.json).
  const std::string& report_path() const noexcept { return report_path_; }

 private:
  Failure failure_;
  std::string report_path_;
};

}  // namespace daifu
