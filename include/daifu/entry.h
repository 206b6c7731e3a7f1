// The entry-function guard: records what ends a program (an exception escaping the training
// function, or std::terminate) in the workplace before the process goes.
#pragma once

#include <daifu/export.h>

#include <functional>
#include <string>

namespace daifu {

/// Runs `fn` (e.g. the body of main). An exception escaping it is classified, journaled as an
/// "uncaught" event with a report in failures/, printed to stderr, and turned into exit code 1.
/// While `fn` runs, std::terminate first journals a "terminate" event, then chains to the
/// previous terminate handler. A workplace that cannot be used (docs/security.md) is said on
/// stderr and returns 1 without running `fn`.
///
/// Example:
///   int main(int argc, char** argv) {
///     return daifu::run_main("daifu_workplace", [&] { train(argc, argv); return 0; });
///   }
DAIFU_API int run_main(const std::string& workplace, const std::function<int()>& fn);

}  // namespace daifu
