#include "journal_summary.h"

#include <fstream>
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
  for (const auto& r : s.step_recoveries) {
    if (r.step == step) return r.us;
  }
  return 0;
}

double back_past_total_us(const JournalSummary& s) {
  double total = 0;
  for (const auto& r : s.step_recoveries) total += r.us;
  return total;
}

JournalSummary summarize_journal(const std::filesystem::path& journal) {
  std::ifstream in(journal);
  if (!in) throw std::runtime_error("cannot read the journal " + journal.string());
  JournalSummary s;
  // The stretch of recovery lines at one step that step_recoveries.back() sums up; a loop's or
  // a run's start or end closes it.
  double first_us = 0, first_time = -1, summed_us = 0;
  bool timed = false, open = false;
  auto recovered = [&](const nlohmann::json& line) {
    const double us = number(line, "recovery_us", 0);
    const auto step = static_cast<int64_t>(number(line, "step"));
    const double time = number(line, "time");
    s.recovery_us.push_back(us);
    s.recovery_steps.push_back(step);
    if (!open || s.step_recoveries.back().step != step) {
      s.step_recoveries.push_back({step, 0});
      open = true;
      first_us = us;
      first_time = time;
      summed_us = 0;
      timed = time > 0;
    }
    summed_us += us;
    timed = timed && time > 0;
    s.step_recoveries.back().us = timed ? first_us + 1e6 * (time - first_time) : summed_us;
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
    if (event == "run_start" || event == "loop_start" || event == "loop_end" || event == "run_end") open = false;
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
