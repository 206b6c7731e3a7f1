#include "session/step_loop.h"

#include "control/control_channel.h"
#include "journal/events.h"
#include "surgery/registry_access.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

namespace daifu {
namespace detail {
namespace {

std::string change_text(const RepairContext::Change& c) { return c.what + ": " + c.before_json + " -> " + c.after_json; }

// Thrown by a guard loop started inside a step of another loop of the same session; the outer
// loop escalates it unrepaired (StepLoop::refuse_nested_loop).
class NestedLoop final : public Error {
 public:
  explicit NestedLoop(const std::string& where)
      : Error("daifu: the guard loop at " + where +
              " was started inside a step of another guard loop of the same session; nested guard loops are not "
              "supported (the inner loop would move the outer step's rollback point): run it between steps, or "
              "give it a Session of its own") {}
};

}  // namespace

void StepLoop::run(int64_t first, int64_t last, StepBodyRef body, BatchSource* source) {
  loop_ = impl_.loops_started++;
  source_ = source;
  memoizes_ = impl_.memoizing_loops.count(where_) > 0;  // what this loop's steps did in earlier epochs
  uses_micro_batches_ = impl_.micro_batching_loops.count(where_) > 0;
  impl_.journal.set_loop(loop_);
  impl_.running_loop = this;
  struct LoopEnds {  // however the loop ends
    SessionImpl& impl;
    ~LoopEnds() {
      impl.journal.set_loop(-1);
      impl.running_loop = nullptr;
    }
  } loop_ends{impl_};
  if (impl_.options.resume() && !impl_.resume_checked) impl_.resume_from_disk();
  if (source_ != nullptr) {
    first = impl_.next_each_step;  // set by resume_from_disk in a resumed run
    last = std::numeric_limits<int64_t>::max();
  }
  first_ = first;
  int64_t start = first;
  if (impl_.resume_point) {
    if (loop_ < impl_.resume_point->loop) {  // finished before the snapshot was taken
      impl_.journal.write({{"event", event::loop_skipped}, {"step", first}, {"where", where_},
                           {"reason", "resumed"}});
      return;
    }
    std::optional<BatchSource::Position> at;
    if (loop_ == impl_.resume_point->loop) {
      start = std::clamp(impl_.resume_point->step, first, last);
      at = impl_.resume_point->each_position;
    }
    impl_.resume_point.reset();
    if (source_ != nullptr && start > first) {
      // The range picks up where the saving run stood; without a saved place, or if the range
      // ended before it, the loop has nothing left.
      if (!at || !source_->seek(*at)) last = start;
    }
  }
  if (source_ != nullptr) impl_.next_each_step = std::max(impl_.next_each_step, start);
  nlohmann::json line = {{"event", event::loop_start}, {"step", start}, {"first", first},
                         {"where", where_}};
  if (source_ != nullptr) {
    line["each"] = true;
    if (start > first) line["passed"] = start - first;  // steps done before the resume
  } else {
    line["last"] = last;
  }
  impl_.journal.write(line);
  high_water_ = start;
  if (impl_.replayer.pending()) {
    Step first_step;
    StepAccess::index(first_step) = start;
    StepAccess::first(first_step) = first;
    impl_.replayer.loop_started(session_, where_, first_step);
  }
  for (int64_t index = start; index < last;) {
    if (catch_up_ && catch_up_->failed == index) note_caught_up(index);
    // A step skipped before the rollback that re-runs it is passed again, journaled once: it
    // holds no batch to re-run with, and a range would hand it the next step's.
    const bool skipped_before = index < high_water_ && skipped_.count(index) > 0;
    if (pending_skip_.erase(index) > 0 || skipped_before) {
      if (!skipped_before) {
        Step skipped;
        StepAccess::index(skipped) = index;
        skip(skipped);
      }
      ++index;
      continue;
    }
    if (source_ != nullptr) impl_.next_each_step = std::max(impl_.next_each_step, index + 1);
    Step step;
    StepAccess::index(step) = index;
    StepAccess::first(step) = first;
    StepAccess::from_range(step) = source_ != nullptr;
    if (auto it = pending_attempt_.find(index); it != pending_attempt_.end()) StepAccess::attempt(step) = it->second;
    if (auto it = memos_.find(index); it != memos_.end()) StepAccess::memos(step) = it->second;
    const bool rerun = index < high_water_;
    impl_.current_step = index;
    if (!rerun && step.attempt() == 0 && impl_.replayer.pending()) impl_.replayer.step_starting(session_, where_, step);
    for (;;) {
      if (impl_.agreement) impl_.agreement->begin_attempt(index, step.attempt(), index + 1 < last);
      // A snapshot a surgery asked for (e.g. after changing a parameter's shape) is taken
      // before the retry, not only at the next step.
      if (!rerun && (step.attempt() == 0 || impl_.snapshot_requested)) maybe_snapshot(index);
      StepAccess::micro_batch_knob(step).clear();
      impl_.state.begin_step();
      impl_.values.begin_step();
      impl_.step_metrics.clear();
      impl_.detectors.begin_attempt(index, step.attempt());
      if (impl_.agreement) {
        impl_.agreement->vote_snapshot(window_start_ < 0 || impl_.snapshot_requested ||
                                       index + 1 - window_start_ >= impl_.policy.every());
      }
      StepAccess::session(step) = &impl_;
      const auto started = Clock::now();
      Decision decision;
      bool committed = false;
      bool exhausted = false;
      try {
        if (impl_.agreement) impl_.agreement->raise_if_failed();  // told while settling for a snapshot
        // Fetching the batch is part of the step: a loader that throws fails the step. An injected
        // fault strikes once the step holds its batch, as a real one would.
        exhausted = source_ != nullptr && !source_->fill(step);
        if (!exhausted) {
          if (const Injection* inj = impl_.injection_for(index, step.attempt())) arm(step, inj->fault);
          impl_.injector.begin_attempt(index, step.attempt());
          body(step);
          impl_.injector.end_attempt();
          if (impl_.armed_fault) fire_armed();
          impl_.state.synchronize_devices();
          // The state is checked at a loop's last step (the next loop's first snapshot holds it,
          // and no rollback reaches back into this loop) and at every step of a distributed
          // session (its snapshots are voted for before the detectors run; every rank takes them).
          impl_.detectors.end_attempt(impl_.step_metrics, /*every_step=*/impl_.agreement != nullptr || index + 1 >= last);
          if (impl_.agreement) impl_.agreement->end_point();
          committed = true;
        }
      } catch (...) {
        impl_.armed_fault.reset();
        impl_.injector.end_attempt();
        refuse_nested_loop(step);
        // Both throw daifu::Unrecovered to escalate.
        decision = impl_.agreement ? handle_distributed_failure(step, Clock::now()) : handle_failure(step, Clock::now());
      }
      if (exhausted) {  // the range ended; a retry that wanted a new batch found none
        impl_.armed_fault.reset();
        impl_.next_each_step = step.attempt() > 0 ? index + 1 : index;
        if (step.attempt() > 0) skip(step);
        last = index;
        break;
      }
      if (committed) {
        impl_.detectors.commit(index);
        impl_.policy.record_step(std::chrono::duration<double>(Clock::now() - started).count());
        commit(step, rerun);
        if (!rerun && impl_.checks.due(index)) run_checks(index);
        ++index;
        // The end point of a loop's last step is settled here, not by a next step's.
        if (index < last || !impl_.agreement || settle(step)) break;
        decision = handle_distributed_failure(step, Clock::now());
      }
      index = step.index();  // a distributed failure may be of the step before this one
      if (decision.action == Action::Skip && !decision.rollback) {
        skip(step, std::chrono::duration<double, std::micro>(Clock::now() - decision.caught).count());
        ++index;
        break;
      }
      if (decision.rollback) {  // the same data on the retry, or none if a surgery dropped it
        if (StepAccess::memos(step).empty()) {
          memos_.erase(index);
        } else {
          memos_[index] = StepAccess::memos(step);
        }
      }
      if (decision.rollback) {  // a failure during a re-run extends the catch-up of the first
        catch_up_ = catch_up_ ? CatchUp{std::max(catch_up_->failed, index), window_start_, catch_up_->caught}
                              : CatchUp{index, window_start_, decision.caught};
      }
      if (decision.action == Action::Skip) {  // skipped once the steps before it are re-run
        pending_skip_.insert(index);
        index = window_start_;
        break;
      }
      ++impl_.stats.retries;
      const double recovery_us =
          std::chrono::duration<double, std::micro>(Clock::now() - decision.caught).count();
      impl_.incidents.back().recovery_us = recovery_us;
      nlohmann::json resume = {{"event", event::resume}, {"step", index}, {"attempt", step.attempt() + 1},
                                {"recovery_us", recovery_us}};
      if (decision.rollback) resume["rerun_from"] = window_start_;
      impl_.journal.write(resume);
      if (decision.rollback) {
        pending_attempt_[index] = step.attempt() + 1;
        index = window_start_;
        // Failures come in runs (a flaky disk, a bad stretch of data): the retry starts from a
        // snapshot of its own, so a second failure of it re-runs nothing.
        impl_.snapshot_requested = true;
        break;
      }
      ++StepAccess::attempt(step);
    }
  }
  impl_.current_step = -1;
  impl_.journal.release_reports();
  impl_.journal.write({{"event", event::loop_end}, {"step", last}, {"where", where_},
                       {"global_step", impl_.global_step}});
}

void StepLoop::arm(Step& step, const std::string& fault) {
  // Where the loop's committed steps say the fault would strike for real; before the body otherwise.
  const bool lands_later = (fault == "oom" && (uses_micro_batches_ || source_ != nullptr)) ||
                           (fault == "nan_data" && (memoizes_ || source_ != nullptr));
  if (!lands_later) throw_injected(fault, (impl_.workplace / "inject").string());
  impl_.armed_fault = fault;
  if (source_ != nullptr) StepAccess::memoized(step);  // the range's batch is memoized already
}

void StepLoop::fire_armed() {
  const std::string fault = *impl_.armed_fault;
  impl_.armed_fault.reset();
  throw_injected(fault, (impl_.workplace / "inject").string());
}

void StepLoop::maybe_snapshot(int64_t index) {
  if (impl_.state.objects().empty()) return;
  // Ranks of a distributed session take their snapshots at the same steps, as voted at the
  // update point of the step before, and only of a state every rank has committed.
  const bool due = window_start_ < 0 || impl_.snapshot_requested ||
                   (impl_.agreement ? impl_.agreement->snapshot_next() : index - window_start_ >= impl_.policy.every());
  if (!due) return;
  if (impl_.agreement) {
    Step at;
    StepAccess::index(at) = index;
    if (!settle(at)) return;  // the attempt raises what it told
    // The previous step's end rides on this step's update point (no snapshot was voted for, but
    // one was asked for since): taken before the next step, which the vote now asks for.
    if (!impl_.agreement->previous_confirmed()) return;
  }
  // No snapshot holds a state the detectors' state checks have not seen: one they find faulty
  // is not captured, and the check at this attempt's end fires (rolling back to the older one).
  if (!impl_.detectors.state_clean_now()) return;
  const int64_t every_before = impl_.policy.every();
  const auto started = Clock::now();
  try {
    impl_.snapshot.capture(impl_.state, index, impl_.global_step);
    impl_.values.capture();
  } catch (const std::exception& e) {
    // Without a snapshot a failure after a mutation escalates; training itself goes on.
    window_start_ = -1;
    memos_.clear();
    skipped_.clear();
    impl_.journal.write({{"event", event::snapshot_failed}, {"step", index}, {"message", e.what()}});
    impl_.journal.record_warning(std::string("Snapshot at step ") + std::to_string(index) + " failed: " + e.what());
    return;
  }
  if (impl_.store) {
    nlohmann::json knobs = nlohmann::json::object();
    for (const auto& [name, knob] : impl_.knobs) knobs[name] = nlohmann::json::parse(knob->json());
    try {
      // "each_first": where the DAIFU_GUARD_EACH loop that a resumed run continues begins;
      // "each_position": where this loop's range stands (BatchSource::seek).
      nlohmann::json extra = {{"loop", loop_},
                              {"each_first", source_ != nullptr ? first_ : impl_.next_each_step},
                              {"knobs", knobs},
                              {"values", nlohmann::json::parse(impl_.values.snapshot_json())}};
      if (source_ != nullptr) {
        const BatchSource::Position at = source_->position();
        extra["each_position"] = {at.moves, at.handed_out};
      }
      impl_.snapshot.persist(*impl_.store, extra.dump(), /*durable=*/false);
    } catch (const std::exception& e) {
      impl_.journal.write({{"event", event::persist_failed}, {"step", index}, {"message", e.what()}});
      impl_.journal.record_warning(std::string("Persisting the snapshot of step ") + std::to_string(index) +
                                   " failed: " + e.what());
      impl_.journal.say_once("persist", std::string("snapshots cannot be persisted (") + e.what() +
                                            "); training goes on, but a crash now resumes from an older one or none");
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  impl_.policy.record_capture(seconds);
  impl_.snapshot_requested = false;
  window_start_ = index;
  memos_.clear();
  skipped_.clear();
  auto& stats = impl_.snapshot_stats;
  ++stats.captures;
  stats.last_capture_ms = seconds * 1e3;
  stats.last_step = index;
  if (stats.captures == 1 || impl_.policy.every() != every_before) {
    impl_.journal.write({{"event", event::snapshot}, {"step", index}, {"bytes", impl_.snapshot.bytes()},
                         {"capture_ms", seconds * 1e3}, {"every", impl_.policy.every()},
                         {"step_ms", impl_.policy.step_seconds() * 1e3}});
  }
}

void StepLoop::restore_snapshot(const Step& failed, const std::vector<std::string>& mutated) {
  const auto started = Clock::now();
  impl_.snapshot.restore(impl_.state);
  impl_.values.restore_snapshot();
  impl_.detectors.state_restored();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
  impl_.snapshot_stats.last_restore_ms = ms;
  impl_.global_step = impl_.snapshot.global_step();
  ++impl_.stats.rollbacks;
  // Metrics of the steps to be re-run are reported again.
  auto& rows = impl_.metric_rows;
  rows.erase(std::remove_if(rows.begin(), rows.end(), [&](const auto& r) { return r.step >= window_start_; }), rows.end());
  impl_.journal.write({{"event", event::rollback}, {"step", failed.index()}, {"to_step", window_start_},
                       {"rerun_steps", failed.index() - window_start_}, {"restore_ms", ms}, {"mutated", mutated}});
  impl_.journal.record("Rollback from step " + std::to_string(failed.index()) + " to the snapshot of step " +
                       std::to_string(window_start_) + " (" + std::to_string(failed.index() - window_start_) +
                       " steps to re-run)");
}

void StepLoop::commit(const Step& step, bool rerun) {
  impl_.journal.release_reports();  // the reports held while this step or the steps before it were repaired
  ++impl_.global_step;
  if (rerun) {
    ++impl_.stats.rerun_steps;
  } else {
    ++impl_.stats.committed_steps;
  }
  high_water_ = std::max(high_water_, step.index() + 1);
  pending_attempt_.erase(step.index());
  if (window_start_ >= 0 && !StepAccess::memos(step).empty()) memos_[step.index()] = StepAccess::memos(step);
  if (!memoizes_ && !StepAccess::memos(step).empty()) {
    memoizes_ = true;
    impl_.memoizing_loops.insert(where_);
  }
  if (!uses_micro_batches_ && !step.micro_batch_knob().empty()) {
    uses_micro_batches_ = true;
    impl_.micro_batching_loops.insert(where_);
  }
  if (step.attempt() > 0 || repaired_after_update_) {
    SurgeryRegistryAccess::reset_step(impl_.surgeries);
    repaired_after_update_ = false;
  }
  if (!rerun) SurgeryRegistryAccess::step_committed(impl_.surgeries, session_, step.index());
  if (!impl_.step_metrics.empty()) {
    impl_.metric_rows.push_back({step.index(), std::move(impl_.step_metrics)});
    impl_.step_metrics.clear();
    if (static_cast<int64_t>(impl_.metric_rows.size()) >= impl_.options.metrics_every()) impl_.flush_metrics();
  }
}

void StepLoop::run_checks(int64_t index) {
  const Knob<double>* lr = nullptr;
  if (const std::string& name = impl_.options.lr_knob(); !name.empty()) {
    if (auto it = impl_.knobs.find(name); it != impl_.knobs.end()) lr = dynamic_cast<const Knob<double>*>(it->second.get());
  }
  impl_.stats.failed_checks += impl_.checks.run(index, lr);
}

void StepLoop::note_caught_up(int64_t index) {
  const double recovery_us = std::chrono::duration<double, std::micro>(Clock::now() - catch_up_->caught).count();
  impl_.journal.write({{"event", event::caught_up}, {"step", index}, {"rerun_from", catch_up_->from},
                       {"rerun_steps", index - catch_up_->from}, {"recovery_us", recovery_us}});
  catch_up_.reset();
}

void StepLoop::skip(const Step& step, double recovery_us) {
  ++impl_.stats.skipped_steps;
  if (window_start_ >= 0) skipped_.insert(step.index());
  high_water_ = std::max(high_water_, step.index() + 1);
  pending_attempt_.erase(step.index());
  SurgeryRegistryAccess::reset_step(impl_.surgeries);
  repaired_after_update_ = false;
  nlohmann::json line = {{"event", event::skip}, {"step", step.index()}, {"attempt", step.attempt()}};
  if (recovery_us >= 0) line["recovery_us"] = recovery_us;
  impl_.journal.write(line);
  impl_.journal.record("Step " + std::to_string(step.index()) + " skipped");
  impl_.journal.release_reports();
}

StepLoop::Reported StepLoop::record_failure(const Step& step, bool after_update) {
  Reported failed;
  Failure& failure = failed.failure;
  failure = impl_.classifier.classify(std::current_exception());
  failure.where = where_;
  failure.step = step.index();
  failure.attempt = step.attempt();
  ++impl_.stats.failures;

  const auto [report_number, report_path] = impl_.journal.reserve_report();
  failed.number = report_number;
  failed.report = report_path.string();
  const std::string& report = failed.report;
  nlohmann::json line = Journal::to_json(failure);
  line["event"] = event::failure;
  line["report"] = report;
  if (after_update) line["after_update"] = true;
  impl_.journal.write(line);
  impl_.journal.record("Failure " + std::to_string(report_number) + " at step " + std::to_string(failure.step) +
                       " attempt " + std::to_string(failure.attempt) + " (" + std::string(to_string(failure.kind)) +
                       ", " + failure.exception_type + "): " + failure.message);
  nlohmann::json full = line;
  full["global_step"] = impl_.global_step;
  full["tracked"] = impl_.state.names();
  impl_.journal.write_report(report_path, full, failure.throw_site, /*synchronous=*/false);
  impl_.incidents.push_back(Incident{failure, "", "unrecovered", {}, 0});
  return failed;
}

StepLoop::Decision StepLoop::handle_failure(Step& step, Clock::time_point caught, bool rollback) {
  Decision decision;
  decision.caught = caught;
  const Reported failed = record_failure(step);
  const Failure& failure = failed.failure;
  const std::string& report = failed.report;

  // A retry re-runs the step on the state it began with; the RNG is put back so a retried
  // step draws the same random numbers (dropout, augmentation) as its first attempt.
  const std::vector<std::string> mutated = impl_.state.mutated_since_begin();
  impl_.values.restore_step();
  // A fatal error leaves the device unusable: every later call into its runtime (restoring a
  // CUDA generator among them) throws the error again, so nothing of it is touched.
  if (failure.kind == FailureKind::Fatal) {
    escalate(failure, report, "a fatal error (the CUDA context may be gone); not retried in place", {});
  }
  try {
    impl_.state.restore_rng();
  } catch (const std::exception& e) {
    escalate(failure, report, std::string("restoring the random number generators failed: ") + e.what(), {});
  }
  const bool out_of_attempts = step.attempt() + 1 >= impl_.options.max_attempts();
  const std::string attempts_why = "the step failed " + std::to_string(step.attempt() + 1) + " times (max_attempts)";
  if (out_of_attempts && impl_.on_unrecovered != OnUnrecovered::Pause) escalate(failure, report, attempts_why, {});
  // A state check's detection is of the state, which an earlier step may have spoiled (the
  // checks run every few steps): the snapshot, which they had seen, is restored even if this
  // attempt changed nothing.
  const bool state_fault = failure.kind == FailureKind::NumericFault && is_state_check(failure.detector);
  if (!mutated.empty() || rollback || state_fault) {
    std::string names;
    for (const auto& n : mutated) names += (names.empty() ? "" : ", ") + n;
    if (window_start_ < 0 || !impl_.snapshot.valid()) {
      escalate(failure, report,
               names.empty() && state_fault
                   ? "the detector " + failure.detector + " found the tracked state faulty and there is no snapshot "
                     "to restore it from"
                   : "tracked state (" + (names.empty() ? std::string("on another rank") : names) +
                         ") was modified in place before the failure and there is no snapshot to restore it from; "
                         "running the step again would apply part of it twice",
               {});
    }
    // Surgeries see (and may change) the state as of the snapshot; the steps since it are run
    // again before the failed one.
    try {
      restore_snapshot(step, mutated);
    } catch (const std::exception& e) {
      escalate(failure, report, std::string("restoring the snapshot failed: ") + e.what(), {});
    }
    decision.rollback = true;
  }
  if (out_of_attempts) return pause(step, failed, attempts_why, {}, decision);

  std::vector<std::string> tried;
  for (Surgery* surgery : impl_.surgeries.candidates(failure)) {
    RepairContext context(session_, step, failure, SurgeryRegistryAccess::fired_this_step(impl_.surgeries, *surgery));
    const int64_t stamp = impl_.state.version_stamp();
    const std::optional<Action> applied = apply_surgery(*surgery, context, step);
    if (!applied) {
      tried.push_back(surgery->name() + " (threw)");
      continue;
    }
    const Action action = *applied;
    if (action == Action::Decline) {
      // Knob changes made before declining stay (and are journaled by the knob); a surgery
      // that declines should not change anything.
      impl_.journal.write({{"event", event::surgery_declined}, {"step", step.index()}, {"surgery", surgery->name()},
                           {"reason", context.explanation()}});
      tried.push_back(surgery->name() + " (declined" +
                      (context.explanation().empty() ? "" : ": " + context.explanation()) + ")");
      if (impl_.state.version_stamp() != stamp) {  // the next surgery would repair a state nobody vouches for
        return give_up(step, failed,
                       "surgery " + surgery->name() +
                           " declined after modifying the tracked state; a surgery that declines must change nothing",
                       std::move(tried), decision);
      }
      continue;
    }
    SurgeryRegistryAccess::record_fire(impl_.surgeries, *surgery);
    record_repair(step, failed, surgery->name(), action, context);
    tried.push_back(surgery->name() + " -> " + to_string(action));
    if (action == Action::Escalate) {
      const std::string& why = context.explanation();
      return give_up(step, failed, "surgery " + surgery->name() + " escalated" + (why.empty() ? "" : ": " + why),
                     std::move(tried), decision);
    }
    decision.action = action;
    return decision;
  }
  return give_up(step, failed, "no surgery repairs " + std::string(to_string(failure.kind)) + " failures",
                 std::move(tried), decision);
}

std::optional<Action> StepLoop::apply_surgery(Surgery& surgery, RepairContext& context, const Step& step) {
  impl_.active_repair = &context;
  try {
    const Action action = surgery.apply(context);
    impl_.active_repair = nullptr;
    return action;
  } catch (...) {
    impl_.active_repair = nullptr;
    const Failure inner = impl_.classifier.classify(std::current_exception());
    impl_.journal.write({{"event", event::surgery_failed}, {"step", step.index()}, {"surgery", surgery.name()},
                         {"exception_type", inner.exception_type}, {"message", inner.message}});
    impl_.journal.record_warning("Surgery " + surgery.name() + " failed: " + inner.message);
    return std::nullopt;
  }
}

bool StepLoop::repair_after_update(Step& step, int64_t tries, int64_t stamp) noexcept {
  const auto caught = Clock::now();
  try {
    throw;  // daifu's own exceptions (a detection, a peer's failure, misuse) are the step's to handle
  } catch (const Unrecovered&) {
    return false;
  } catch (const Error&) {
    return false;
  } catch (...) {
  }
  // One rank retrying alone would split a distributed session (its knobs, collectives in fn);
  // a change to tracked state needs the step re-run from its snapshot.
  if (impl_.agreement || tries + 1 >= impl_.options.max_attempts() || impl_.state.version_stamp() != stamp) return false;
  try {
    // Only failures whose repair acts outside the tracked state and the step's data.
    const FailureKind kind = impl_.classifier.classify(std::current_exception()).kind;
    if (kind != FailureKind::PathProblem && kind != FailureKind::TransientRuntime) return false;
    const Reported failed = record_failure(step, /*after_update=*/true);
    for (Surgery* surgery : impl_.surgeries.candidates(failed.failure)) {
      RepairContext context(session_, step, failed.failure, SurgeryRegistryAccess::fired_this_step(impl_.surgeries, *surgery));
      const std::optional<Action> action = apply_surgery(*surgery, context, step);
      if (!action || (*action == Action::Decline && impl_.state.version_stamp() == stamp)) continue;
      if (*action != Action::Retry || impl_.state.version_stamp() != stamp) break;
      SurgeryRegistryAccess::record_fire(impl_.surgeries, *surgery);
      repaired_after_update_ = true;
      record_repair(step, failed, surgery->name(), *action, context);
      ++impl_.stats.retries;
      const double recovery_us = std::chrono::duration<double, std::micro>(Clock::now() - caught).count();
      impl_.incidents.back().recovery_us = recovery_us;
      impl_.journal.write({{"event", event::resume}, {"step", step.index()}, {"attempt", step.attempt()},
                           {"after_update", true}, {"recovery_us", recovery_us}});
      return true;
    }
    // Handed to the step, whose handling records it again: counted once, as the step's.
    impl_.incidents.pop_back();
    --impl_.stats.failures;
  } catch (...) {  // journaling failed: the step's handling meets the original exception
  }
  return false;
}

void StepLoop::record_repair(const Step& step, const Reported& failed, const std::string& surgery, Action action,
                             const RepairContext& context) {
  nlohmann::json changes = nlohmann::json::object();
  Incident& incident = impl_.incidents.back();
  incident.surgery = surgery;
  incident.changes.clear();
  for (const auto& c : context.changes()) {
    changes[c.what] = {nlohmann::json::parse(c.before_json), nlohmann::json::parse(c.after_json)};
    incident.changes.push_back(change_text(c));
  }
  nlohmann::json repair = {{"event", event::repair}, {"step", step.index()},           {"attempt", step.attempt()},
                           {"surgery", surgery}, {"matched", std::string(to_string(failed.failure.kind))},
                           {"action", to_string(action)}, {"changes", changes},
                           {"report", failed.report}};
  const std::string& why = context.explanation();
  if (!why.empty()) repair["reason"] = why;
  impl_.journal.write(repair);
  last_repair_ = {surgery, context.changes()};
  std::string record = "Repair " + std::to_string(failed.number) + " by " + surgery + ": " + to_string(action);
  for (const auto& c : incident.changes) record += "; " + c;
  if (!why.empty()) record += " (" + why + ")";
  impl_.journal.record(record);
  if (action == Action::Retry || action == Action::Skip) incident.outcome = action == Action::Skip ? "skip" : "retry";
}

StepLoop::Decision StepLoop::give_up(Step& step, const Reported& failed, const std::string& why,
                                     std::vector<std::string> tried, Decision decision) {
  if (impl_.on_unrecovered != OnUnrecovered::Pause) escalate(failed.failure, failed.report, why, std::move(tried));
  return pause(step, failed, why, std::move(tried), decision);
}

void StepLoop::escalate(Failure failure, const std::string& report, const std::string& why,
                        std::vector<std::string> tried) {
  clear_paused(impl_.workplace);
  ++impl_.stats.unrecovered;
  impl_.unrecovered = true;
  impl_.flush_metrics();
  impl_.journal.flush_reports();  // the report must be on disk before the user reads the message
  impl_.journal.write({{"event", event::unrecovered}, {"step", failure.step}, {"attempt", failure.attempt},
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

void StepLoop::refuse_nested_loop(const Step& step) {
  try {
    throw;
  } catch (const NestedLoop& e) {
    const Reported failed = record_failure(step);
    escalate(failed.failure, failed.report, "a guard loop of this session was started inside the step", {});
  } catch (...) {
  }
}

void GuardLoop::run(StepBodyRef body, BatchSource* source) {
  std::string where = std::string(file_) + ":" + std::to_string(line_);
  SessionImpl& impl = SessionAccess::impl(session_);
  std::thread::id running{};
  if (!impl.loop_thread.compare_exchange_strong(running, std::this_thread::get_id())) {
    if (running == std::this_thread::get_id()) throw NestedLoop(where);
    throw Error("daifu: the guard loop at " + where +
                " was started while another thread runs a guard loop of the same session; a session runs one loop "
                "at a time (give each thread a Session of its own)");
  }
  struct Release {
    SessionImpl& impl;
    ~Release() { impl.loop_thread = std::thread::id{}; }
  } release{impl};
  if (source != nullptr && impl.agreement) {
    throw Error("daifu: DAIFU_GUARD_EACH at " + where +
                " is not supported in a distributed session yet (the ranks would have to agree where each one's "
                "range ends); use DAIFU_GUARD over a number of steps every rank knows");
  }
  StepLoop(session_, std::move(where)).run(first_, last_, body, source);
}

}  // namespace detail
}  // namespace daifu
