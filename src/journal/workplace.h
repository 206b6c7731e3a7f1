// The workplace folder: journal.jsonl, experiment_record.log, failures/.
#pragma once

#include <filesystem>
#include <string>

namespace daifu::detail {

inline constexpr const char* kJournalFile = "journal.jsonl";
inline constexpr const char* kRecordFile = "experiment_record.log";
inline constexpr const char* kFailuresDir = "failures";
inline constexpr const char* kPatchesDir = "patches";
inline constexpr const char* kControlDir = "control";

/// Creates the workplace and its failures/ folder and checks that both are writable.
/// Throws daifu::Error naming the path and the reason when they are not.
std::filesystem::path prepare_workplace(const std::string& path);

}  // namespace daifu::detail
