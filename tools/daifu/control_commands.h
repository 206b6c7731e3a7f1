// The live-control commands of the `daifu` CLI: talk to a session paused with
// Options::on_unrecovered(Pause) through its workplace (src/control/control_channel.h).
#pragma once

#include <filesystem>
#include <map>
#include <string>

namespace daifu::cli {

/// Exit codes of the control commands (docs/hot-patching.md).
enum Exit : int {
  kOk = 0,           ///< done; the session took the command and went on (or gave up, for abort)
  kError = 1,        ///< bad arguments, or the workplace cannot be used
  kNotPaused = 2,    ///< no live session is paused in the workplace
  kNoAnswer = 3,     ///< sent, but the session did not take it within --wait seconds
  kRefused = 4,      ///< the session refused the command (the reason is printed)
};

struct ControlOptions {
  std::filesystem::path workplace;
  double wait_s = 30;  ///< how long to wait for the session's answer
};

/// Prints whether a session is paused in the workplace and how to go on.
int status(const ControlOptions& options);
/// Copies `patch` into <workplace>/patches/ (private, atomically) and, if a session is
/// paused, tells it to run that patch. Without a paused session the patch waits there for the
/// next failure.
int apply(const ControlOptions& options, const std::filesystem::path& patch);
/// Sets knobs ("batch_size=16"; the value is JSON if it parses, else a string) and retries.
int set(const ControlOptions& options, const std::map<std::string, std::string>& assignments);
/// retry, skip or abort.
int simple(const ControlOptions& options, const std::string& verb, const std::string& reason);

}  // namespace daifu::cli
