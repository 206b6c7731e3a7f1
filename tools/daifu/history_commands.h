// The `daifu` commands that read a workplace's history: log, show, stats.
#pragma once

#include <filesystem>

namespace daifu::cli {

struct ReadOptions {
  std::filesystem::path workplace;
  bool json = false;   ///< machine-readable output
  bool color = false;  ///< ANSI colours (on a terminal, unless --no-color)
};

/// A table of every failure: time, run, step, kind, exception, surgery, outcome, duration. For
/// the workplace of a distributed session (rank-<r>/ folders) every rank's, merged by time.
int log(const ReadOptions& options);
/// Failure N (as numbered in failures/NNNN.json) in full, with its throw-site stack.
int show(const ReadOptions& options, int number);
/// Counts per kind and per surgery, and the time lost to failures against a restart's cost.
int stats(const ReadOptions& options);
/// What a run with Options::replay would re-apply, and what is checked before each item.
int replay_dry_run(const ReadOptions& options);

}  // namespace daifu::cli
