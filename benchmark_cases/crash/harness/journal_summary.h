// What a guarded run's workplace journal says about its failures and their repairs.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace crash {

struct JournalSummary {
  int64_t failures = 0;
  std::map<std::string, int64_t> kinds;      ///< failure kind -> count
  std::map<std::string, int64_t> surgeries;  ///< repairing surgery (or patch, command) -> count
  int64_t rollbacks = 0;
  int64_t rerun_steps = 0;
  int64_t skipped = 0;
  int64_t pauses = 0;       ///< a human was asked (on_unrecovered(Pause))
  int64_t commands = 0;     ///< and answered through control/
  int64_t patches = 0;      ///< hot patches that ran
  int64_t unrecovered = 0;
  /// One per failure that training got past: failure caught -> training running again
  /// (the re-run of a rollback included), in microseconds.
  std::vector<double> recovery_us;
  std::vector<int64_t> recovery_steps;  ///< the step of each recovery_us entry
  /// One per stretch of recovery lines at one step (a step's failures in a row): from its
  /// first failure caught to training running past the step for good — the first line's
  /// recovery_us plus the journal time from that line to the stretch's last one, so that an
  /// attempt that failed again, and what it computed before it failed, counts. Where a line of
  /// the stretch has no time, its lines' recovery_us summed instead.
  struct StepRecovery {
    int64_t step = -1;
    double us = 0;
  };
  std::vector<StepRecovery> step_recoveries;
  /// One per retry: failure caught -> the step running again (a rollback's re-run excluded).
  std::vector<double> resume_us;
  std::vector<int64_t> resume_steps;
  std::vector<int64_t> failure_steps;
  std::string first_exception;  ///< "type: message" of the first failure
  std::vector<std::string> warnings;  ///< lines that were not JSON objects with an "event"
};

/// The first StepRecovery at `step`, in microseconds; 0 where no failure at `step` was recovered.
double back_past_us(const JournalSummary& s, int64_t step);
/// Every StepRecovery summed, in microseconds.
double back_past_total_us(const JournalSummary& s);

/// Reads `journal` (journal.jsonl). Never throws for bad lines: they land in `warnings`.
/// Throws std::runtime_error if the file cannot be read.
JournalSummary summarize_journal(const std::filesystem::path& journal);

}  // namespace crash
