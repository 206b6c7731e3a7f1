#include "replay/history.h"

#include <daifu/journal.h>

#include "journal/events.h"
#include "journal/workplace.h"

#include <map>

namespace daifu::detail {
namespace {

// Field accessors that never throw: a missing field or one of another type gives `fallback`
// (json_text, in history.h, for strings).
double number(const nlohmann::json& j, const char* key, double fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

class Folder {
 public:
  explicit Folder(History& h) : h_(h) {}

  void add(const nlohmann::json& j, int64_t line_number) {
    const std::string name = json_text(j, "event");
    const std::string run = json_text(j, "run");
    const int64_t step = json_integer(j, "step", -1);
    if (name == event::run_start) {
      RunRecord r;
      r.id = run;
      r.pid = json_integer(j, "pid");
      r.start = number(j, "time");
      runs_[run] = h_.runs.size();
      h_.runs.push_back(r);
    } else if (name == event::run_end) {
      if (RunRecord* r = find_run(run)) {
        r->end = number(j, "time");
        r->status = json_text(j, "status");
        r->committed_steps = json_integer(j, "committed_steps");
        r->failures = json_integer(j, "failures");
      }
    } else if (name == event::failure) {
      IncidentRecord i;
      i.run = run;
      i.step = step;
      i.attempt = json_integer(j, "attempt");
      i.loop = json_integer(j, "loop", -1);
      i.time = number(j, "time");
      i.kind = json_text(j, "kind", "unknown");
      i.exception_type = json_text(j, "exception_type");
      i.message = json_text(j, "message");
      i.where = json_text(j, "where");
      i.report = json_text(j, "report");
      if (!i.report.empty()) by_report_[i.report] = h_.incidents.size();
      h_.incidents.push_back(std::move(i));
    } else if (name == event::repair) {
      if (IncidentRecord* i = by_report(j, line_number)) {
        i->surgery = json_text(j, "surgery");
        i->action = json_text(j, "action");
        i->reason = json_text(j, "reason");
        if (j.contains("changes") && j["changes"].is_object()) i->changes = j["changes"];
      }
    } else if (name == event::unrecovered) {
      if (IncidentRecord* i = by_report(j, line_number)) i->outcome = "unrecovered";
    } else if (name == event::resume) {
      if (IncidentRecord* i = open_incident(run, step)) {
        i->outcome = "retry";
        i->recovery_us = number(j, "recovery_us", -1);
      }
    } else if (name == event::skip) {
      if (IncidentRecord* i = open_incident(run, step)) i->outcome = "skip";
    } else if (name == event::rollback) {
      if (IncidentRecord* i = open_incident(run, step)) i->rerun_steps = json_integer(j, "rerun_steps");
    } else if (name == event::pause_end) {
      if (IncidentRecord* i = open_incident(run, step)) i->paused_s = number(j, "waited_s");
    } else if (name == event::knob) {
      KnobChange k;
      k.run = run;
      k.step = step;
      k.time = number(j, "time");
      k.name = json_text(j, "name");
      k.before = j.value("before", nlohmann::json());
      k.after = j.value("after", nlohmann::json());
      k.reason = json_text(j, "reason");
      if (!k.name.empty()) h_.knob_changes.push_back(std::move(k));
    } else if (name == event::metrics) {
      add_metrics(j, run, line_number);
    }
  }

 private:
  RunRecord* find_run(const std::string& id) {
    auto it = runs_.find(id);
    return it == runs_.end() ? nullptr : &h_.runs[it->second];
  }

  IncidentRecord* by_report(const nlohmann::json& j, int64_t line_number) {
    auto it = by_report_.find(json_text(j, "report"));
    if (it != by_report_.end()) return &h_.incidents[it->second];
    h_.warnings.push_back("line " + std::to_string(line_number) + ": a " + json_text(j, "event") +
                          " line names no failure read before it; not attributed");
    return nullptr;
  }

  // The newest failure of `run` at `step` that nothing has resolved yet.
  IncidentRecord* open_incident(const std::string& run, int64_t step) {
    for (auto it = h_.incidents.rbegin(); it != h_.incidents.rend(); ++it) {
      if (it->run == run && it->step == step && it->outcome.empty()) return &*it;
    }
    return nullptr;
  }

  void add_metrics(const nlohmann::json& j, const std::string& run, int64_t line_number) {
    const auto steps = j.value("steps", nlohmann::json());
    const auto values = j.value("values", nlohmann::json());
    if (!steps.is_array() || !values.is_object()) {
      h_.warnings.push_back("line " + std::to_string(line_number) + ": a metrics line without steps/values; skipped");
      return;
    }
    for (const auto& [name, column] : values.items()) {
      if (!column.is_array()) continue;
      for (std::size_t r = 0; r < column.size() && r < steps.size(); ++r) {
        if (!column[r].is_number() || !steps[r].is_number_integer()) continue;  // null: not reported
        h_.metrics.push_back({run, steps[r].get<int64_t>(), name, column[r].get<double>()});
      }
    }
  }

  History& h_;
  std::map<std::string, std::size_t> runs_;
  std::map<std::string, std::size_t> by_report_;
};

}  // namespace

History read_history(const std::filesystem::path& workplace) {
  const JournalContents contents = read_journal((workplace / kJournalFile).string());
  History h;
  h.warnings = contents.warnings;
  h.skipped_lines = static_cast<int64_t>(contents.warnings.size());
  Folder folder(h);
  for (const auto& line : contents.lines) {
    nlohmann::json j = nlohmann::json::parse(line.json, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;  // read_journal checked it; kept safe anyway
    folder.add(j, line.line_number);
    h.lines.push_back(std::move(j));
  }
  return h;
}

}  // namespace daifu::detail
