#include "replay/replay_plan.h"

#include "core/json_input.h"
#include "journal/events.h"
#include "journal/workplace.h"

#include <map>
#include <set>

namespace daifu::detail {
namespace fs = std::filesystem;

namespace {

// The tracked names in a failure report; empty if it cannot be read.
std::vector<std::string> tracked_names(const std::string& report) {
  const nlohmann::json j = detail::parse_untrusted_json_file(report);
  std::vector<std::string> names;
  if (j.is_object() && j.contains("tracked") && j["tracked"].is_array()) {
    for (const auto& n : j["tracked"]) {
      if (n.is_string()) names.push_back(n.get<std::string>());
    }
  }
  return names;
}

}  // namespace

std::string ReplayItem::describe() const {
  const std::string origin =
      " (" + surgery + " repaired " + kind + " at step " + std::to_string(step) + ", " + where + ")";
  if (type == Type::Knob) return name + " " + before.dump() + " -> " + after.dump() + origin;
  return "patch " + fs::path(path).filename().string() + " sha256 " + sha256.substr(0, 12) + origin;
}

std::vector<ReplayItem> plan_replay(const History& history, const fs::path& workplace,
                                    const std::vector<std::string>& exclude_runs) {
  const std::set<std::string> excluded(exclude_runs.begin(), exclude_runs.end());
  // Knob names per run, from knob_created lines: a change is a knob change only if it is one.
  std::set<std::pair<std::string, std::string>> knobs;
  for (const auto& j : history.lines) {
    if (json_text(j, "event") == event::knob_created && !json_text(j, "name").empty()) {
      knobs.emplace(json_text(j, "run"), json_text(j, "name"));
    }
  }
  // Knobs grown back after an out-of-memory shrink: (run, name) -> where (loop, step) and to what.
  struct Growth {
    int64_t loop, step;
    nlohmann::json after;
  };
  std::multimap<std::pair<std::string, std::string>, Growth> grown;
  for (const auto& j : history.lines) {
    if (json_text(j, "event") == event::grow_back) {
      grown.emplace(std::pair{json_text(j, "run"), json_text(j, "name")},
                    Growth{json_integer(j, "loop", -1), json_integer(j, "step", -1), j.value("after", nlohmann::json())});
    }
  }
  // Whether the out-of-memory repair `i` was undone in its run: a knob it shrank grew back to
  // its value before, later in the run (a later loop, or later in the same one). The pressure
  // had passed; replaying the shrink would keep it all run.
  const auto grown_back = [&](const IncidentRecord& i) {
    if (i.surgery != "out_of_memory") return false;
    for (const auto& [what, change] : i.changes.items()) {
      if (!change.is_array() || change.size() != 2 || !change[0].is_number_integer()) continue;
      auto [first, last] = grown.equal_range({i.run, what});
      for (auto it = first; it != last; ++it) {
        const Growth& g = it->second;
        const bool later = g.loop > i.loop || (g.loop == i.loop && g.step >= i.step);
        if (later && g.after.is_number_integer() && g.after.get<int64_t>() >= change[0].get<int64_t>()) return true;
      }
    }
    return false;
  };
  std::vector<ReplayItem> items;
  for (const auto& i : history.incidents) {
    if (excluded.count(i.run) > 0 || (i.outcome != "retry" && i.outcome != "skip")) continue;
    if (i.surgery.rfind("replay", 0) == 0 || grown_back(i)) continue;
    ReplayItem base;
    base.run = i.run;
    base.where = i.where;
    base.kind = i.kind;
    base.surgery = i.surgery;
    base.step = i.step;
    // The report's path was written relative to the training process's directory: look for it
    // in this workplace, wherever that is now.
    base.tracked = tracked_names((workplace / kFailuresDir / fs::path(i.report).filename()).string());
    // A patch's repair is replayed by running the patch again: it re-does its own knob changes.
    const auto patch = i.changes.find("patch");
    if (patch != i.changes.end() && patch->is_array() && patch->size() == 2 && (*patch)[1].is_object()) {
      ReplayItem item = base;
      item.type = ReplayItem::Type::Patch;
      item.path = json_text((*patch)[1], "path");
      item.sha256 = json_text((*patch)[1], "sha256");
      item.changes = i.changes;
      item.changes.erase("patch");
      if (!item.path.empty()) items.push_back(std::move(item));
      continue;
    }
    for (const auto& [what, change] : i.changes.items()) {
      if (knobs.count({i.run, what}) > 0 && change.is_array() && change.size() == 2) {
        ReplayItem item = base;
        item.name = what;
        item.before = change[0];
        item.after = change[1];
        items.push_back(std::move(item));
      }
    }
  }
  return items;
}

}  // namespace daifu::detail
