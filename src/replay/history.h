// A workplace's history: journal.jsonl read into runs, failures (with what was done about
// them), knob changes and reported metrics. What the CLI shows and what replay re-applies.
// Torch-free. Reading never fails on content: what cannot be understood is counted and
// described in `warnings`, and the rest is used.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace daifu::detail {

/// The string field `key` of object `j`, or `fallback` if it is missing or not a string (or
/// `j` is not an object): journal content never throws.
inline std::string json_text(const nlohmann::json& j, const char* key, const std::string& fallback = "") {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

/// The integer field `key` of object `j`, or `fallback` if it is missing or not an integer.
inline int64_t json_integer(const nlohmann::json& j, const char* key, int64_t fallback = 0) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
}

struct RunRecord {
  std::string id;
  int64_t pid = 0;
  double start = 0, end = 0;  ///< Unix seconds; end 0 if the run has no run_end line
  std::string status;         ///< ok, unrecovered, exception; "" if it did not end cleanly
  int64_t committed_steps = 0, failures = 0;
};

/// One failure and what became of it.
struct IncidentRecord {
  std::string run;
  int64_t step = -1, attempt = 0;
  int64_t loop = -1;               ///< the guard loop it struck in (order of start); -1: not said
  double time = 0;
  std::string kind, exception_type, message, where, report;
  std::string surgery;             ///< the surgery, patch ("hot_patch") or command that decided it
  std::string action;              ///< its action: retry, skip, escalate
  std::string outcome;             ///< retry, skip, unrecovered, or "" (the run ended first)
  std::string reason;              ///< the surgery's explanation
  nlohmann::json changes = nlohmann::json::object();  ///< {"batch_size": [64, 32], ...}
  double recovery_us = -1;         ///< failure caught -> step running again; -1 if it did not
  double paused_s = 0;             ///< time waited for a fix (on_unrecovered(Pause))
  int64_t rerun_steps = 0;         ///< steps re-run by a rollback for it
};

struct KnobChange {
  std::string run;
  int64_t step = -1;
  double time = 0;
  std::string name;
  nlohmann::json before, after;
  std::string reason;
};

struct MetricPoint {
  std::string run;
  int64_t step = -1;
  std::string name;
  double value = 0;
};

struct History {
  std::vector<RunRecord> runs;
  std::vector<IncidentRecord> incidents;
  std::vector<KnobChange> knob_changes;
  std::vector<MetricPoint> metrics;
  std::vector<nlohmann::json> lines;  ///< every readable line, parsed, in order
  std::vector<std::string> warnings;  ///< one per line or field that was skipped
  int64_t skipped_lines = 0;
};

/// Reads <workplace>/journal.jsonl. Throws daifu::Error only if it cannot be opened.
History read_history(const std::filesystem::path& workplace);

}  // namespace daifu::detail
