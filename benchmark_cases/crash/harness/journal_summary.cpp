#include "journal_summary.h"

#include <fstream>
#include <set>
#include <stdexcept>

namespace crash {
namespace {

std::string text(const nlohmann::json& line, const char* key) {
  const auto it = line.find(key);
  return it != line.end() && it->is_string() ? it->get<std::string>() : std::string();
}

double number(const nlohmann::json& line, const char* key, double fallback = -1) {
  const auto it = line.find(key);
  return it != line.end() && it->is_number() ? it->get<double>() : fallback;
}

}  // namespace

double back_past_us(const JournalSummary& s, int64_t step) {
  double first_us = 0, first_time = 0, last_time = 0;
  bool seen = false;
  for (std::size_t i = 0; i < s.recovery_us.size(); ++i) {
    if (s.recovery_steps[i] != step) continue;
    if (!seen) {
      first_us = s.recovery_us[i];
      first_time = s.recovery_times[i];
      seen = true;
    }
    last_time = s.recovery_times[i];
  }
  return seen ? first_us + 1e6 * (last_time - first_time) : 0;
}

double back_past_total_us(const JournalSummary& s) {
  std::set<int64_t> steps(s.recovery_steps.begin(), s.recovery_steps.end());
  double total = 0;
  for (int64_t step : steps) total += back_past_us(s, step);
  return total;
}

JournalSummary summarize_journal(const std::filesystem::path& journal) {
  std::ifstream in(journal);
  if (!in) throw std::runtime_error("cannot read the journal " + journal.string());
  JournalSummary s;
  auto recovered = [&s](const nlohmann::json& line) {
    s.recovery_us.push_back(number(line, "recovery_us", 0));
    s.recovery_steps.push_back(static_cast<int64_t>(number(line, "step")));
    s.recovery_times.push_back(number(line, "time", 0));
  };
  std::string raw;
  int64_t number_of_line = 0;
  while (std::getline(in, raw)) {
    ++number_of_line;
    if (raw.empty()) continue;
    const nlohmann::json line = nlohmann::json::parse(raw, nullptr, /*allow_exceptions=*/false);
    if (!line.is_object() || !line.contains("event")) {
      s.warnings.push_back(journal.string() + ":" + std::to_string(number_of_line) + ": not a journal line");
      continue;
    }
    const std::string event = text(line, "event");
    if (event == "failure") {
      ++s.failures;
      ++s.kinds[text(line, "kind")];
      s.failure_steps.push_back(static_cast<int64_t>(number(line, "step")));
      if (s.first_exception.empty()) s.first_exception = text(line, "exception_type") + ": " + text(line, "message");
    } else if (event == "repair") {
      ++s.surgeries[text(line, "surgery")];
    } else if (event == "rollback") {
      ++s.rollbacks;
      s.rerun_steps += static_cast<int64_t>(number(line, "rerun_steps", 0));
    } else if (event == "resume") {
      s.resume_us.push_back(number(line, "recovery_us", 0));
      s.resume_steps.push_back(static_cast<int64_t>(number(line, "step")));
      // After a rollback the failure is behind once the re-run caught up (below).
      if (!line.contains("rerun_from")) recovered(line);
    } else if (event == "caught_up") {
      recovered(line);
    } else if (event == "skip") {
      ++s.skipped;
      if (line.contains("recovery_us")) recovered(line);
    } else if (event == "pause") {
      ++s.pauses;
    } else if (event == "command") {
      ++s.commands;
    } else if (event == "patch") {
      ++s.patches;
    } else if (event == "unrecovered") {
      ++s.unrecovered;
    }
  }
  return s;
}

}  // namespace crash
