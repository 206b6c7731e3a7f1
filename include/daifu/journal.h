// Reading a workplace's journal.jsonl: one JSON object per line, append-only.
#pragma once

#include <daifu/export.h>

#include <cstdint>
#include <string>
#include <vector>

namespace daifu {

/// Version written as "v" on every journal line.
inline constexpr int kJournalSchemaVersion = 1;

/// One journal line; `json` is the whole object as written.
struct DAIFU_API JournalLine {
  std::string event;
  int64_t step = -1;  ///< -1 when the line has no step
  double time = 0;    ///< seconds since the Unix epoch
  std::string json;
  int64_t line_number = 0;  ///< 1-based
};

struct DAIFU_API JournalContents {
  std::vector<JournalLine> lines;
  /// One message per line that was skipped (torn, not JSON, no "event", newer schema).
  std::vector<std::string> warnings;
};

/// Reads a journal. Lines that cannot be read are skipped with a warning, never fatal.
/// Throws daifu::Error only if the file cannot be opened.
DAIFU_API JournalContents read_journal(const std::string& path);

}  // namespace daifu
