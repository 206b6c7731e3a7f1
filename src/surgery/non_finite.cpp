#include "surgery/non_finite.h"

#include "core/bounded_regex.h"

#include <regex>

namespace daifu::detail {

bool names_non_finite(const std::string& message) {
  static const std::regex words(R"(\b(nan|inf|infinity|infinite|non-finite)\b)",
                                std::regex::ECMAScript | std::regex::icase | std::regex::optimize);
  return regex_search_bounded(message, words);
}

bool from_detector(const Failure& failure) {
  return failure.kind == FailureKind::NumericFault && failure.exception_type == "daifu::FaultDetected";
}

bool program_found_non_finite(const Failure& failure) {
  return failure.kind == FailureKind::NumericFault && !from_detector(failure) && names_non_finite(failure.message);
}

}  // namespace daifu::detail
