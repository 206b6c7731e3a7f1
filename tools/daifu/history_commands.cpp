#include "history_commands.h"

#include <daifu/errors.h>

#include "core/json_input.h"
#include "core/strings.h"
#include "journal/events.h"
#include "patch/sha256.h"
#include "replay/history.h"
#include "replay/replay_plan.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace daifu::cli {
namespace fs = std::filesystem;
using detail::History;
using detail::IncidentRecord;

namespace {

constexpr const char* kReset = "\033[0m";

// ANSI colour of a failure kind (kinds that need a person in red).
const char* kind_color(const std::string& kind) {
  if (kind == "api_misuse" || kind == "fatal" || kind == "unknown") return "\033[31m";
  if (kind == "out_of_memory" || kind == "device_contention") return "\033[33m";
  if (kind == "transient_runtime") return "\033[36m";
  return "\033[35m";
}

std::string clock_time(double unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%m-%d %H:%M:%S", &tm);
  return text;
}

std::string first_line(const std::string& s, std::size_t width) {
  std::string line = s.substr(0, s.find('\n'));
  if (line.size() > width) line = line.substr(0, width - 3) + "...";
  return line;
}

std::string duration(const IncidentRecord& i) {
  std::ostringstream out;
  out << std::fixed;
  if (i.paused_s > 0) {
    out << std::setprecision(1) << i.paused_s << " s paused";
  } else if (i.recovery_us >= 0) {
    out << std::setprecision(i.recovery_us < 10000 ? 2 : 0) << i.recovery_us / 1000.0 << " ms";
  } else {
    return "-";
  }
  return out.str();
}

std::string short_run(const std::string& run) { return run.size() > 4 ? run.substr(run.size() - 4) : run; }

// Loads the history or prints why it cannot; nullopt then.
bool load(const ReadOptions& options, History& h) {
  try {
    h = detail::read_history(options.workplace);
  } catch (const Error& e) {
    std::cerr << e.what() << "\n";
    return false;
  }
  for (const auto& w : h.warnings) std::cerr << "daifu: warning: " << w << "\n";
  return true;
}

nlohmann::json to_json(const IncidentRecord& i) {
  return {{"run", i.run},         {"loop", i.loop},           {"step", i.step},           {"attempt", i.attempt}, {"time", i.time},
          {"kind", i.kind},       {"exception_type", i.exception_type}, {"message", i.message},
          {"where", i.where},     {"report", i.report},       {"surgery", i.surgery}, {"action", i.action},
          {"outcome", i.outcome}, {"reason", i.reason},       {"changes", i.changes},
          {"recovery_us", i.recovery_us}, {"paused_s", i.paused_s}, {"rerun_steps", i.rerun_steps}};
}

// Whether a failure is gone when the process starts again: a fault of the moment (a dropped
// connection, a busy device, a flipped bit), not of the code, data or configuration. A numeric
// fault whose batch was dropped or skipped was the data's.
bool gone_on_restart(const IncidentRecord& i) {
  if (i.surgery == "data_or_code" || i.surgery == "exceptional_data") return false;
  return i.kind == "transient_runtime" || i.kind == "device_contention" || i.kind == "numeric_fault";
}

}  // namespace

// The rank-<r> folders of a distributed session's workplace, by rank; empty for a single process.
std::map<int, std::filesystem::path> rank_workplaces(const std::filesystem::path& workplace) {
  std::map<int, std::filesystem::path> out;
  std::error_code ec;
  if (std::filesystem::exists(workplace / "journal.jsonl", ec)) return out;
  for (const auto& entry : std::filesystem::directory_iterator(workplace, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("rank-", 0) != 0) continue;
    if (const auto rank = detail::parse_decimal<int>(std::string_view(name).substr(5))) out[*rank] = entry.path();
  }
  return out;
}

// Every rank's failures in one table, by time, with the rank in front; the lines of ranks that
// followed another's repair are counted per rank.
int merged_log(const ReadOptions& options, const std::map<int, std::filesystem::path>& ranks) {
  struct Tagged {
    int rank;
    IncidentRecord incident;
  };
  std::vector<Tagged> all;
  std::map<int, int64_t> followed;
  for (const auto& [rank, dir] : ranks) {
    History h;
    ReadOptions one = options;
    one.workplace = dir;
    if (!load(one, h)) return 1;
    for (auto& i : h.incidents) all.push_back({rank, std::move(i)});
    for (const auto& line : h.lines) followed[rank] += line.value("event", "") == detail::event::peer_failure;
  }
  std::stable_sort(all.begin(), all.end(), [](const Tagged& a, const Tagged& b) { return a.incident.time < b.incident.time; });
  if (options.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : all) {
      nlohmann::json row = to_json(t.incident);
      row["rank"] = t.rank;
      out.push_back(std::move(row));
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << ranks.size() << " ranks, " << all.size() << " failure(s) in " << options.workplace.string() << "\n";
  for (const auto& [rank, n] : followed) {
    if (n > 0) std::cout << "rank " << rank << " followed " << n << " repair(s) of other ranks (peer_failure)\n";
  }
  if (all.empty()) return 0;
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"time (UTC)", "rank", "step", "kind", "exception", "surgery", "outcome", "duration", "message"});
  for (const auto& t : all) {
    const IncidentRecord& i = t.incident;
    rows.push_back({clock_time(i.time), std::to_string(t.rank),
                    std::to_string(i.step) + (i.attempt ? "." + std::to_string(i.attempt) : ""), i.kind, i.exception_type,
                    i.surgery.empty() ? "-" : i.surgery, i.outcome.empty() ? "-" : i.outcome, duration(i),
                    first_line(i.message, 60)});
  }
  std::vector<std::size_t> width(rows[0].size(), 0);
  for (const auto& r : rows) {
    for (std::size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  }
  for (const auto& r : rows) {
    for (std::size_t c = 0; c < r.size(); ++c) {
      std::cout << r[c];
      if (c + 1 < r.size()) std::cout << std::string(width[c] - r[c].size() + 2, ' ');
    }
    std::cout << "\n";
  }
  return 0;
}

int log(const ReadOptions& options) {
  if (const auto ranks = rank_workplaces(options.workplace); !ranks.empty()) return merged_log(options, ranks);
  History h;
  if (!load(options, h)) return 1;
  if (options.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& i : h.incidents) out.push_back(to_json(i));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << h.runs.size() << " run(s), " << h.incidents.size() << " failure(s) in "
            << options.workplace.string() << "\n";
  if (h.incidents.empty()) return 0;
  struct Row {
    std::vector<std::string> cells;
    std::string kind;
  };
  // The loop is shown when failures struck in more than one (per-epoch DAIFU_GUARD loops each
  // count their steps from their own first).
  const bool loops = std::any_of(h.incidents.begin(), h.incidents.end(), [](const auto& i) { return i.loop > 0; });
  std::vector<Row> rows;
  rows.push_back({{"time (UTC)", "run", "step", "kind", "exception", "surgery", "outcome", "duration", "message"}, ""});
  if (loops) rows[0].cells.insert(rows[0].cells.begin() + 2, "loop");
  for (const auto& i : h.incidents) {
    rows.push_back({{clock_time(i.time), short_run(i.run), std::to_string(i.step) + (i.attempt ? "." + std::to_string(i.attempt) : ""),
                     i.kind, i.exception_type, i.surgery.empty() ? "-" : i.surgery,
                     i.outcome.empty() ? "-" : i.outcome, duration(i), first_line(i.message, 60)},
                    i.kind});
    if (loops) rows.back().cells.insert(rows.back().cells.begin() + 2, i.loop >= 0 ? std::to_string(i.loop) : "-");
  }
  const std::size_t kind_column = loops ? 4 : 3;
  std::vector<std::size_t> width(rows[0].cells.size(), 0);
  for (const auto& r : rows) {
    for (std::size_t c = 0; c < r.cells.size(); ++c) width[c] = std::max(width[c], r.cells[c].size());
  }
  for (const auto& r : rows) {
    for (std::size_t c = 0; c < r.cells.size(); ++c) {
      const bool colored = options.color && c == kind_column && !r.kind.empty();
      if (colored) std::cout << kind_color(r.kind);
      std::cout << r.cells[c];
      if (colored) std::cout << kReset;
      if (c + 1 < r.cells.size()) std::cout << std::string(width[c] - r.cells[c].size() + 2, ' ');
    }
    std::cout << "\n";
  }
  return 0;
}

int show(const ReadOptions& options, int number) {
  char name[32];
  std::snprintf(name, sizeof name, "%04d.json", number);
  const fs::path file = options.workplace / "failures" / name;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(file, ec))) {
    std::cerr << "daifu: no failure report " << file.string() << " (see daifu log for the failures)\n";
    return 1;
  }
  std::string why;
  nlohmann::json report = detail::parse_untrusted_json_file(file, &why);
  if (!report.is_object()) {
    std::cerr << "daifu: " << file.string() << " is not a JSON report" << (why.empty() ? "" : " (" + why + ")") << "\n";
    return 1;
  }
  // What became of it, from the journal.
  History h;
  const bool have_history = load(options, h);
  const IncidentRecord* incident = nullptr;
  if (have_history) {
    for (const auto& i : h.incidents) {
      if (fs::path(i.report).filename() == name) incident = &i;
    }
  }
  if (options.json) {
    if (incident != nullptr) report["resolution"] = to_json(*incident);
    std::cout << report.dump(2) << "\n";
    return 0;
  }
  auto field = [&](const char* key) {
    auto it = report.find(key);
    return it == report.end() ? std::string() : it->is_string() ? it->get<std::string>() : it->dump();
  };
  const std::string event = field("event");
  if (event == detail::event::uncaught || event == detail::event::terminate) {  // by run_main, outside any step
    std::cout << "failure   " << number << ": the exception that ended the program ("
              << (event == detail::event::uncaught ? "uncaught, run_main returned 1" : "std::terminate") << ")\n";
  } else {
    std::cout << "failure   " << number << " at step " << field("step") << " attempt " << field("attempt") << " ("
              << field("where") << ")\n";
  }
  std::cout
            << "kind      " << field("kind") << " (matched by " << field("matched_by") << ")\n"
            << "exception " << field("exception_type") << "\n"
            << "message   " << first_line(field("message"), 400) << "\n";
  if (incident != nullptr) {
    std::cout << "surgery   " << (incident->surgery.empty() ? "-" : incident->surgery) << " -> "
              << (incident->outcome.empty() ? "-" : incident->outcome) << ", " << duration(*incident) << "\n";
    if (!incident->reason.empty()) std::cout << "reason    " << incident->reason << "\n";
    for (const auto& [what, change] : incident->changes.items()) {
      std::cout << "changed   " << what << ": " << (change.is_array() && change.size() == 2
                                                         ? change[0].dump() + " -> " + change[1].dump()
                                                         : change.dump())
                << "\n";
    }
  }
  std::cout << "stack (throw site):\n" << field("stack");
  if (!field("stack").empty() && field("stack").back() != '\n') std::cout << "\n";
  return 0;
}

int stats(const ReadOptions& options) {
  History h;
  if (!load(options, h)) return 1;
  std::map<std::string, int64_t> per_kind, per_surgery, per_outcome;
  double recovery_s = 0, paused_s = 0, saved_s = 0;
  int64_t rerun = 0, would_repeat = 0;
  std::map<std::string, double> run_start;
  for (const auto& r : h.runs) run_start[r.id] = r.start;
  for (const auto& i : h.incidents) {
    ++per_kind[i.kind];
    ++per_surgery[i.surgery.empty() ? "(none)" : i.surgery];
    ++per_outcome[i.outcome.empty() ? "(run ended)" : i.outcome];
    if (i.recovery_us > 0) recovery_s += i.recovery_us / 1e6;
    paused_s += i.paused_s;
    rerun += i.rerun_steps;
    if (i.outcome != "retry" && i.outcome != "skip") continue;
    // A recovered failure that a restart would not meet again (it came and went) saves what a
    // restart from scratch would redo: the run so far. One that depends on the code, the data
    // or the configuration, a restart meets again: it needed the repair, not a restart.
    if (!gone_on_restart(i)) {
      ++would_repeat;
    } else if (run_start.count(i.run) > 0) {
      saved_s += i.time - run_start[i.run];
    }
  }
  if (options.json) {
    std::cout << nlohmann::json{{"runs", h.runs.size()},         {"failures", h.incidents.size()},
                                {"per_kind", per_kind},          {"per_surgery", per_surgery},
                                {"per_outcome", per_outcome},    {"recovery_s", recovery_s},
                                {"paused_s", paused_s},          {"rerun_steps", rerun},
                                {"restart_cost_avoided_s", saved_s}, {"recovered_restart_would_repeat", would_repeat},
                                {"skipped_lines", h.skipped_lines}}
                     .dump(2)
              << "\n";
    return 0;
  }
  auto table = [](const char* title, const std::map<std::string, int64_t>& counts) {
    std::cout << title << "\n";
    std::size_t w = 0;
    for (const auto& [k, n] : counts) w = std::max(w, k.size());
    for (const auto& [k, n] : counts) std::cout << "  " << k << std::string(w - k.size() + 2, ' ') << n << "\n";
  };
  std::cout << h.runs.size() << " run(s), " << h.incidents.size() << " failure(s)";
  if (h.skipped_lines > 0) std::cout << ", " << h.skipped_lines << " journal line(s) skipped";
  std::cout << "\n";
  table("per kind", per_kind);
  table("per surgery", per_surgery);
  table("per outcome", per_outcome);
  std::cout << std::fixed << std::setprecision(3) << "time lost   " << recovery_s << " s recovering, " << paused_s
            << " s paused, " << rerun << " step(s) re-run after rollbacks\n"
            << "time saved  " << saved_s
            << " s: the training before each recovered transient failure (transient_runtime, device_contention, "
               "numeric_fault not dropped as data), which a restart from scratch would redo\n"
            << "            " << would_repeat
            << " recovered failure(s) of other kinds, which a restart would have met again\n";
  return 0;
}

int replay_dry_run(const ReadOptions& options) {
  History h;
  if (!load(options, h)) return 1;
  const auto items = detail::plan_replay(h, options.workplace, {});
  nlohmann::json out = nlohmann::json::array();
  if (!options.json) {
    std::cout << items.size() << " item(s) a run with replay would re-apply, oldest first:\n";
  }
  for (const auto& item : items) {
    std::string verdict;
    if (item.type == detail::ReplayItem::Type::Knob) {
      verdict = "sets " + item.name + " to " + item.after.dump() + " if it is " + item.before.dump() +
                " when the guard at " + item.where + " starts (eager) or reaches step " + std::to_string(item.step) +
                " (at_step)";
    } else {
      std::string sha;
      try {
        sha = detail::sha256_file(item.path);
      } catch (const Error& e) {
        verdict = std::string("skipped: ") + e.what();  // gone, unreadable, or not a regular file
      }
      if (!sha.empty() && sha != item.sha256) {
        verdict = "skipped: the patch file changed since it ran (sha256 " + sha.substr(0, 12) + ")";
      } else if (!sha.empty()) {
        verdict = "runs the patch (hash checked) if the modules it changed still have the shapes it saw";
      }
    }
    std::string tracked;
    for (const auto& n : item.tracked) tracked += (tracked.empty() ? "" : ", ") + n;
    if (options.json) {
      out.push_back({{"what", item.describe()}, {"verdict", verdict}, {"from_run", item.run},
                     {"from_step", item.step}, {"where", item.where}, {"tracked", item.tracked}});
      continue;
    }
    std::cout << "  " << item.describe() << "\n    " << verdict << "\n    and only with the tracked objects ["
              << tracked << "]\n";
  }
  if (options.json) std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace daifu::cli
