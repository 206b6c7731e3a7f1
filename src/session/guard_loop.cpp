// The guarded step loop: run a step; on an exception classify, journal, check the tracked
// state, pick a surgery, and run the step again — bounded by max_attempts.
#include <daifu/guard.h>
#include <daifu/session.h>

#include "session/session_impl.h"

#include <chrono>
#include <cmath>
#include <sstream>

namespace daifu {
namespace detail {
namespace {

using Clock = std::chrono::steady_clock;

std::string change_text(const RepairContext::Change& c) { return c.what + ": " + c.before_json + " -> " + c.after_json; }

}  // namespace

class StepLoop {
 public:
  StepLoop(Session& session, std::string where) : session_(session), impl_(session.impl()), where_(std::move(where)) {}

  void run(int64_t first, int64_t last, StepBodyRef body);

 private:
  struct Decision {
    Action action = Action::Escalate;
    Clock::time_point caught;
  };

  Decision handle_failure(Step& step, Clock::time_point caught);
  [[noreturn]] void escalate(Failure failure, const std::string& report, const std::string& why,
                             std::vector<std::string> tried);
  void commit(const Step& step);
  void skip(const Step& step);

  Session& session_;
  SessionImpl& impl_;
  std::string where_;
};

void StepLoop::run(int64_t first, int64_t last, StepBodyRef body) {
  impl_.journal.write({{"event", "loop_start"}, {"step", first}, {"first", first}, {"last", last}, {"where", where_}});
  for (int64_t index = first; index < last; ++index) {
    Step step;
    step.index_ = index;
    impl_.current_step = index;
    for (;;) {
      impl_.state.begin_step();
      impl_.step_metrics.clear();
      Decision decision;
      bool committed = false;
      try {
        if (const Injection* inj = impl_.injection_for(index, step.attempt_)) {
          throw_injected(inj->fault, (impl_.workplace / "inject").string());
        }
        body(step);
        impl_.state.synchronize_devices();
        committed = true;
      } catch (...) {
        decision = handle_failure(step, Clock::now());  // throws daifu::Unrecovered to escalate
      }
      if (committed) {
        commit(step);
        break;
      }
      if (decision.action == Action::Skip) {
        skip(step);
        break;
      }
      ++step.attempt_;
      ++impl_.stats.retries;
      const double recovery_us =
          std::chrono::duration<double, std::micro>(Clock::now() - decision.caught).count();
      impl_.incidents.back().recovery_us = recovery_us;
      impl_.journal.write({{"event", "resume"}, {"step", index}, {"attempt", step.attempt_}, {"recovery_us", recovery_us}});
    }
  }
  impl_.current_step = -1;
  impl_.journal.write({{"event", "loop_end"}, {"step", last}, {"where", where_}, {"global_step", impl_.global_step}});
}

void StepLoop::commit(const Step& step) {
  ++impl_.global_step;
  ++impl_.stats.committed_steps;
  if (step.attempt_ > 0) impl_.surgeries.reset_step();
  if (!impl_.step_metrics.empty()) {
    impl_.metric_rows.push_back({step.index_, std::move(impl_.step_metrics)});
    impl_.step_metrics.clear();
    if (static_cast<int64_t>(impl_.metric_rows.size()) >= impl_.options.metrics_every()) impl_.flush_metrics();
  }
}

void StepLoop::skip(const Step& step) {
  ++impl_.stats.skipped_steps;
  impl_.surgeries.reset_step();
  impl_.journal.write({{"event", "skip"}, {"step", step.index_}, {"attempt", step.attempt_}});
  impl_.journal.record("Step " + std::to_string(step.index_) + " skipped");
}

StepLoop::Decision StepLoop::handle_failure(Step& step, Clock::time_point caught) {
  Decision decision;
  decision.caught = caught;
  Failure failure = impl_.classifier.classify(std::current_exception());
  failure.where = where_;
  failure.step = step.index_;
  failure.attempt = step.attempt_;
  ++impl_.stats.failures;

  const auto [report_number, report_path] = impl_.journal.reserve_report();
  const std::string report = report_path.string();
  nlohmann::json line = Journal::to_json(failure);
  line["event"] = "failure";
  line["report"] = report;
  impl_.journal.write(line);
  impl_.journal.record("Failure " + std::to_string(report_number) + " at step " + std::to_string(failure.step) +
                       " attempt " + std::to_string(failure.attempt) + " (" + std::string(to_string(failure.kind)) +
                       ", " + failure.exception_type + "): " + failure.message);
  nlohmann::json full = line;
  full["global_step"] = impl_.global_step;
  full["tracked"] = impl_.state.names();
  impl_.journal.write_report(report_path, full, failure.throw_site, /*synchronous=*/false);
  impl_.incidents.push_back(Incident{failure, "", "unrecovered", {}, 0});

  // A retry re-runs the step on the state it began with; the RNG is put back so a retried
  // step draws the same random numbers (dropout, augmentation) as its first attempt.
  const std::vector<std::string> mutated = impl_.state.mutated_since_begin();
  impl_.state.restore_rng();

  if (failure.kind == FailureKind::Fatal) {
    escalate(failure, report, "a fatal error (the CUDA context may be gone); not retried in place", {});
  }
  if (!mutated.empty()) {
    std::string names;
    for (const auto& n : mutated) names += (names.empty() ? "" : ", ") + n;
    escalate(failure, report,
             "tracked state (" + names + ") was modified in place before the failure and there is no snapshot "
             "to restore it from; running the step again would apply part of it twice",
             {});
  }
  if (step.attempt_ + 1 >= impl_.options.max_attempts()) {
    escalate(failure, report, "the step failed " + std::to_string(step.attempt_ + 1) + " times (max_attempts)", {});
  }

  std::vector<std::string> tried;
  for (Surgery* surgery : impl_.surgeries.candidates(failure)) {
    RepairContext context(session_, step, failure, impl_.surgeries.fired_this_step(*surgery));
    impl_.active_changes = &context.changes_;
    Action action = Action::Escalate;
    try {
      action = surgery->apply(context);
    } catch (...) {
      impl_.active_changes = nullptr;
      const Failure inner = impl_.classifier.classify(std::current_exception());
      impl_.journal.write({{"event", "surgery_failed"}, {"step", step.index_}, {"surgery", surgery->name()},
                           {"exception_type", inner.exception_type}, {"message", inner.message}});
      impl_.journal.record_warning("Surgery " + surgery->name() + " failed: " + inner.message);
      tried.push_back(surgery->name() + " (threw)");
      continue;
    }
    impl_.active_changes = nullptr;
    impl_.surgeries.record_fire(*surgery);
    nlohmann::json changes = nlohmann::json::object();
    Incident& incident = impl_.incidents.back();
    incident.surgery = surgery->name();
    for (const auto& c : context.changes()) {
      changes[c.what] = {nlohmann::json::parse(c.before_json), nlohmann::json::parse(c.after_json)};
      incident.changes.push_back(change_text(c));
    }
    impl_.journal.write({{"event", "repair"}, {"step", step.index_}, {"attempt", step.attempt_},
                         {"surgery", surgery->name()}, {"action", to_string(action)}, {"changes", changes},
                         {"report", report}});
    impl_.journal.record("Repair " + std::to_string(report_number) + " by " + surgery->name() + ": " +
                         to_string(action));
    tried.push_back(surgery->name() + " -> " + to_string(action));
    if (action == Action::Escalate) escalate(failure, report, "surgery " + surgery->name() + " escalated", tried);
    incident.outcome = action == Action::Skip ? "skip" : "retry";
    decision.action = action;
    return decision;
  }
  escalate(failure, report, "no surgery repairs " + std::string(to_string(failure.kind)) + " failures", tried);
}

void StepLoop::escalate(Failure failure, const std::string& report, const std::string& why,
                        std::vector<std::string> tried) {
  ++impl_.stats.unrecovered;
  impl_.unrecovered = true;
  impl_.flush_metrics();
  impl_.journal.flush_reports();  // the report must be on disk before the user reads the message
  impl_.journal.write({{"event", "unrecovered"}, {"step", failure.step}, {"attempt", failure.attempt},
                       {"kind", std::string(to_string(failure.kind))}, {"reason", why}, {"tried", tried},
                       {"report", report}});
  impl_.journal.record("Unrecovered at step " + std::to_string(failure.step) + ": " + why);
  // What earlier attempts of this step tried, then this attempt's surgeries.
  std::vector<std::string> history;
  for (std::size_t i = 0; i + 1 < impl_.incidents.size(); ++i) {
    const Incident& inc = impl_.incidents[i];
    if (inc.failure.step != failure.step || inc.failure.where != failure.where) continue;
    history.push_back("attempt " + std::to_string(inc.failure.attempt) + ": " + std::string(to_string(inc.failure.kind)) +
                      " -> " + (inc.surgery.empty() ? "none" : inc.surgery) + " (" + inc.outcome + ")");
  }
  for (auto& t : tried) history.push_back("attempt " + std::to_string(failure.attempt) + ": " + t);
  tried = std::move(history);
  std::ostringstream message;
  message << "daifu: step " << failure.step << " at " << failure.where << " could not be recovered: " << why
          << ". Last failure (attempt " << failure.attempt << "): " << to_string(failure.kind) << ", "
          << failure.exception_type << ": " << failure.message << ". Tried: ";
  if (tried.empty()) message << "nothing";
  for (std::size_t i = 0; i < tried.size(); ++i) message << (i ? ", " : "") << tried[i];
  message << ". Report: " << report;
  impl_.current_step = -1;
  throw Unrecovered(message.str(), std::move(failure), report);
}

void GuardLoop::run(StepBodyRef body) {
  std::string where = std::string(file_) + ":" + std::to_string(line_);
  StepLoop(session_, std::move(where)).run(first_, last_, body);
}

}  // namespace detail
}  // namespace daifu
