// Fault injection for demos, tests and benchmarks: make a guarded step fail, at a chosen step,
// with the real exception a real bug of that kind raises. Plan syntax in docs/injection.md.
#pragma once

#include <daifu/export.h>

#include <cstdint>
#include <string>
#include <vector>

namespace daifu {

/// One planned fault: throw `fault` in step `step`, on its first attempt only (a transient
/// fault) or on every attempt (`every_attempt`, a permanent one).
struct DAIFU_API Injection {
  std::string fault;
  int64_t step = 0;
  bool every_attempt = false;
};

/// The fault names a plan may use: transient, io, oom, shape, dtype, index, path, nan_data,
/// nan_loss, api, contention, illegal_address, unknown.
DAIFU_API const std::vector<std::string>& injectable_faults();

/// Parses "transient@12, shape@30*, oom@80": comma- or space-separated `fault@step`, `*` for
/// every attempt. Throws daifu::Error naming the bad item.
DAIFU_API std::vector<Injection> parse_injections(const std::string& plan);

/// Throws the exception of `fault`, produced for real where it can be (a real mismatched
/// matmul, a real torch::save into a missing folder under `scratch_dir`, a real failed
/// allocation). Throws daifu::Error for an unknown fault name.
[[noreturn]] DAIFU_API void throw_injected(const std::string& fault, const std::string& scratch_dir);

}  // namespace daifu
