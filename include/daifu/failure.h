// What went wrong in one attempt of one step: the classified form of an exception.
#pragma once

#include <daifu/export.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace daifu {

/// The ten failure classes. Surgeries match on these; the journal spells them in snake_case.
enum class FailureKind {
  ApiMisuse,
  TensorMismatch,
  OutOfMemory,
  DeviceContention,
  PathProblem,
  ExceptionalData,
  TransientRuntime,
  NumericFault,
  Fatal,
  Unknown,
};

/// All kinds, in declaration order.
DAIFU_API const std::vector<FailureKind>& all_failure_kinds();
/// snake_case name, e.g. "out_of_memory".
DAIFU_API std::string_view to_string(FailureKind kind);
/// Inverse of to_string; std::nullopt for an unknown spelling.
DAIFU_API std::optional<FailureKind> failure_kind_from_string(std::string_view name);

/// Raw return addresses of the throw site, innermost first. Symbolize with symbolize_stack().
using RawStack = std::vector<const void*>;

/// One classified failure.
struct DAIFU_API Failure {
  FailureKind kind = FailureKind::Unknown;
  std::string exception_type;  ///< demangled dynamic type, e.g. "c10::IndexError"
  std::string message;         ///< what() without libtorch's appended backtrace
  std::string where;           ///< "file:line" of the DAIFU_GUARD that caught it
  std::string matched_by;      ///< which rule classified it: "type:..." or "pattern:..."
  int64_t step = -1;           ///< step index of the guard loop
  int64_t attempt = 0;         ///< 0 for the first attempt of a step
  RawStack throw_site;         ///< captured at throw time; empty if the throw was not seen
  std::string detector;        ///< a daifu::FaultDetected's detector() ("grad_spike"); else empty
};

/// "function at file:line" lines for a raw stack, one frame per line.
DAIFU_API std::string symbolize_stack(const RawStack& stack);
/// The innermost frame outside libtorch, libdaifu and the C++ runtime ("function at
/// file:line"): the user's call that failed. Empty if there is none.
DAIFU_API std::string user_frame(const RawStack& stack);

}  // namespace daifu
