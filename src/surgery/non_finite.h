// Which numeric faults are non-finite values that a program found, as opposed to a silent-fault
// detector: numeric_fault leaves those to exceptional_data without re-executing the step.
#pragma once

#include <daifu/failure.h>

#include <string>

namespace daifu::detail {

/// Whether `message` names a value that is not finite: the words nan, inf, infinity, infinite
/// or non-finite, in any case, within its first kRegexWindow characters (core/bounded_regex.h).
bool names_non_finite(const std::string& message);

/// A numeric_fault that a silent-fault detector raised (daifu::FaultDetected).
bool from_detector(const Failure& failure);

/// A numeric_fault that the program or LibTorch raised on a non-finite value ("loss is NaN",
/// anomaly mode's "returned nan values"), not a detector's daifu::FaultDetected. Re-executing
/// a deterministic step reproduces such a value; a detector's finding is taken for a transient
/// corruption first.
bool program_found_non_finite(const Failure& failure);

}  // namespace daifu::detail
