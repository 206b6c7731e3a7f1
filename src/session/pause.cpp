// Options::on_unrecovered(Pause): a failure no surgery repaired waits, bounded by
// pause_timeout, for an instruction in the workplace: a hot patch in patches/, or a command
// in control/ (daifu apply, set, retry, skip, abort). paused.json says what failed and how to
// fix it while the session waits.
#include "journal/events.h"
#include "session/step_loop.h"

#include "control/control_channel.h"

#include <ctime>
#include <iostream>
#include <thread>

#include <unistd.h>

namespace daifu::detail {
namespace {

constexpr auto kPoll = std::chrono::milliseconds(50);

std::string iso_time(std::chrono::system_clock::time_point t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

nlohmann::json knob_values(const SessionImpl& impl) {
  nlohmann::json knobs = nlohmann::json::object();
  for (const auto& [name, knob] : impl.knobs) knobs[name] = nlohmann::json::parse(knob->json());
  return knobs;
}

std::vector<std::string> how_to_fix(const SessionImpl& impl) {
  const std::string wp = impl.workplace.string();
  std::string knobs;
  for (const auto& [name, knob] : impl.knobs) knobs += (knobs.empty() ? "" : ", ") + name + "=" + knob->json();
  return {
      "fix the code in a hot patch: daifu patch build fix.cpp, then daifu apply fix.so --workplace " + wp +
          " (or copy the .so into " + wp + "/patches/)",
      "change a knob and retry: daifu set NAME=VALUE --workplace " + wp +
          (knobs.empty() ? std::string(" (this session has no knobs)") : " (knobs: " + knobs + ")"),
      "retry as it is (after fixing something outside the process): daifu retry --workplace " + wp,
      "skip this step's data: daifu skip --workplace " + wp,
      "give up (the failure is rethrown): daifu abort --workplace " + wp,
  };
}

}  // namespace

StepLoop::Decision StepLoop::pause(Step& step, const Reported& failed, const std::string& why,
                                   std::vector<std::string> tried, Decision decision) {
  const Failure& failure = failed.failure;
  const std::string pause_id = impl_.journal.run_id() + "-" + std::to_string(failed.number);
  const auto timeout = impl_.pause_timeout;
  const auto now = std::chrono::system_clock::now();
  const auto until = now + std::chrono::duration_cast<std::chrono::system_clock::duration>(timeout);
  const std::vector<std::string> fixes = how_to_fix(impl_);
  nlohmann::json state = {{"pause", pause_id},
                          {"pid", static_cast<int64_t>(::getpid())},
                          {"step", failure.step},
                          {"attempt", failure.attempt},
                          {"where", failure.where},
                          {"kind", std::string(to_string(failure.kind))},
                          {"exception_type", failure.exception_type},
                          {"message", failure.message},
                          {"why", why},
                          {"tried", tried},
                          {"report", failed.report},
                          {"since", iso_time(now)},
                          {"until", iso_time(until)},
                          {"timeout_s", std::chrono::duration<double>(timeout).count()},
                          {"knobs", knob_values(impl_)},
                          {"how_to_fix", fixes}};
  impl_.flush_metrics();
  impl_.journal.flush_reports();  // the report is on disk before anyone is told to read it
  try {
    write_paused(impl_.workplace, state);
  } catch (const std::exception& e) {
    escalate(failure, failed.report, why + "; could not pause: " + e.what(), std::move(tried));
  }
  impl_.journal.write({{"event", event::pause}, {"step", failure.step}, {"attempt", failure.attempt},
                       {"pause", pause_id}, {"kind", std::string(to_string(failure.kind))}, {"reason", why},
                       {"timeout_s", state["timeout_s"]}});
  std::string message = "Paused at step " + std::to_string(failure.step) + " (" + failure.where + "): " + why +
                        ". Waiting until " + iso_time(until) + " for a fix; see " +
                        (impl_.workplace / kPausedFile).string() + ". To go on:";
  for (const auto& fix : fixes) message += "\n  - " + fix;
  impl_.journal.record_warning(message);
  if (!impl_.options.echo()) std::cerr << "daifu: " << message << std::endl;  // echo prints the record already

  const auto started = Clock::now();
  const auto deadline = started + timeout;
  bool warned_control = false;
  // Ends the pause with `action` decided by `surgery` in `context`.
  auto finish = [&](Action action, const std::string& surgery, const RepairContext& context) {
    clear_paused(impl_.workplace);
    const double waited = std::chrono::duration<double>(Clock::now() - started).count();
    impl_.journal.write({{"event", event::pause_end}, {"step", failure.step}, {"pause", pause_id}, {"by", surgery},
                         {"action", to_string(action)}, {"waited_s", waited}});
    record_repair(step, failed, surgery, action, context);
    decision.action = action;
    return decision;
  };
  // A patch failed after it had modified tracked state: put the snapshot back and wait on.
  auto undo_damage = [&](const std::string& reason) {
    if (window_start_ < 0 || !impl_.snapshot.valid()) {
      escalate(failure, failed.report, reason + ", and there is no snapshot to restore the tracked state from",
               std::move(tried));
    }
    try {
      restore_snapshot(step, {"hot patch"});
    } catch (const std::exception& e) {
      escalate(failure, failed.report, reason + "; restoring the snapshot failed: " + e.what(), std::move(tried));
    }
    decision.rollback = true;
    impl_.journal.record_warning(reason + "; the tracked state was restored from the snapshot of step " +
                                 std::to_string(window_start_) + ", still waiting");
  };

  // Acts on what an instruction decided: returns true when the pause is over.
  auto decided = [&](const PatchRunner::Result& r) {
    if (r.damaged) {
      undo_damage(r.reason);
      return false;
    }
    if (r.action == Action::Escalate) {
      tried.push_back("paused, then " + r.reason);
      escalate(failure, failed.report, why + "; then " + r.reason, std::move(tried));
    }
    return r.action.has_value();
  };

  for (;;) {
    std::vector<std::string> rejected;
    std::vector<Command> commands;
    try {
      commands = take_commands(impl_.workplace, &rejected);
    } catch (const Error& e) {
      if (!warned_control) impl_.journal.record_warning(std::string("Commands are not read: ") + e.what());
      warned_control = true;
    }
    for (const auto& r : rejected) {
      impl_.journal.write({{"event", event::command_rejected}, {"step", failure.step}, {"reason", r}});
      impl_.journal.record_warning(r);
    }
    for (const auto& command : commands) {
      RepairContext context(session_, step, failure, 0);
      std::string result;
      std::string surgery = "daifu " + command.verb;
      impl_.active_repair = &context;
      PatchRunner::Result r;
      try {
        r = run_command(command, context, pause_id, result, surgery);
      } catch (const nlohmann::json::exception& e) {  // an argument of a type nobody checked
        result = std::string("refused: ") + e.what();
      }
      impl_.active_repair = nullptr;
      impl_.journal.write({{"event", event::command}, {"step", failure.step}, {"id", command.id},
                           {"command", command.verb}, {"args", command.args}, {"result", result}});
      impl_.journal.record("Command " + command.verb + " (" + command.id + "): " + result);
      if (decided(r)) return finish(*r.action, surgery, context);
    }

    RepairContext context(session_, step, failure, 0);
    impl_.active_repair = &context;
    const PatchRunner::Result patched = impl_.patches.run_new(context);
    impl_.active_repair = nullptr;
    if (decided(patched)) return finish(*patched.action, "hot_patch", context);

    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) {
      tried.push_back("paused " + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count()) +
                      " s: no fix came");
      escalate(failure, failed.report,
               why + "; paused for a fix (daifu apply/set/retry/skip/abort or a patch in patches/) and none came "
                     "within the pause timeout",
               std::move(tried));
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(kPoll, left));
  }
}

PatchRunner::Result StepLoop::run_command(const Command& command, RepairContext& context, const std::string& pause_id,
                                         std::string& result, std::string& surgery) {
  const auto& args = command.args;
  const int64_t step = context.failure().step;
  PatchRunner::Result out;
  result = "ok";
  if (args.contains("pause") && args["pause"] != pause_id) {
    result = "ignored: it was sent to pause " + args["pause"].dump() + ", this is pause " + pause_id;
    return out;
  }
  if (command.verb == "retry" || command.verb == "skip") {
    out.action = command.verb == "retry" ? Action::Retry : Action::Skip;
    context.explain(command.verb + " by command");
    return out;
  }
  if (command.verb == "abort") {
    result = "aborted";
    out.action = Action::Escalate;
    out.reason = "aborted by daifu abort" + (args.contains("reason") ? ": " + args["reason"].dump() : std::string());
    return out;
  }
  if (command.verb == "set") {
    const auto knobs = args.value("knobs", nlohmann::json::object());
    if (!knobs.is_object() || knobs.empty()) {
      result = "refused: set needs {\"knobs\": {NAME: VALUE}}";
      return out;
    }
    const std::string by = "daifu set (paused at step " + std::to_string(step) + ")";
    std::vector<std::pair<KnobBase*, std::string>> done;  // put back if a later one is refused
    for (const auto& [name, value] : knobs.items()) {
      auto it = impl_.knobs.find(name);
      std::string problem;
      if (it == impl_.knobs.end()) {
        std::string names;
        for (const auto& [n, k] : impl_.knobs) names += (names.empty() ? "" : ", ") + n;
        problem = "no knob named \"" + name + "\" (knobs: " + (names.empty() ? "none" : names) + ")";
      } else {
        const std::string before = it->second->json();
        try {
          it->second->set_json(value.dump(), by);
          done.emplace_back(it->second.get(), before);
        } catch (const std::exception& e) {
          problem = e.what();
        }
      }
      if (!problem.empty()) {
        for (auto& [knob, before] : done) knob->set_json(before, "put back: the same daifu set was refused");
        result = "refused: " + problem;
        return out;
      }
    }
    out.action = Action::Retry;
    context.explain("knobs set by command");
    return out;
  }
  // A string argument, or "" if it is missing or of another type (a command is untrusted input).
  auto text = [&](const char* key) {
    const auto it = args.find(key);
    return it != args.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (command.verb == "apply") {
    const std::string file = text("patch");
    surgery = "hot_patch";
    if (file.empty()) {
      result = "refused: apply needs {\"patch\": FILE_NAME in patches/}";
      return out;
    }
    out = impl_.patches.run_file(file, text("staged"), context);
    if (out.damaged) {
      result = "failed: " + out.reason;
    } else if (!out.action) {
      result = "refused: " + out.reason;
    } else {
      result = std::string("ran: ") + to_string(*out.action);
    }
    return out;
  }
  result = "refused: unknown command \"" + command.verb + "\" (apply, set, retry, skip, abort)";
  return out;
}

}  // namespace daifu::detail
