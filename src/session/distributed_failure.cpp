// A failure in a distributed session. Every rank took part in the point of the agreement at
// which the failure became known, so every rank is here for the same attempt. The lowest
// failing rank (the leader) repairs it as a single process would; the others wait for its
// decision, roll back if any rank had modified tracked state (or a state check found it
// faulty), take over its knob changes and do what it does: retry, skip, or escalate. A failure
// told by the previous step's end point is of that step: every rank rolls back and runs it
// again. Every wait is a collective of the group, bounded by the group's timeout; a collective
// that fails ends the run on this rank (lost_peers).
#include <daifu/errors.h>

#include "detect/detectors.h"
#include "journal/events.h"
#include "session/step_loop.h"

#include <nlohmann/json.hpp>

#include <exception>
#include <optional>

namespace daifu::detail {
namespace {

constexpr std::size_t kMaxText = 2000;  // of a message or reason handed to the other ranks

std::string clipped(const std::string& text) { return text.size() > kMaxText ? text.substr(0, kMaxText) + "..." : text; }

// Whether the exception being handled, if any, is a state check's detection (is_state_check).
bool state_fault_in_flight() {
  if (!std::current_exception()) return false;
  try {
    throw;
  } catch (const FaultDetected& f) {
    return is_state_check(f.detector());
  } catch (...) {
    return false;
  }
}

}  // namespace

void StepLoop::lost_peers(const Step& step) {
  const Reported failed = record_failure(step);
  const std::string why = impl_.agreement->broken_reason() +
                          "; a peer died, timed out (the process group's timeout) or lost its connection, so the "
                          "ranks can no longer agree on a repair";
  impl_.journal.write({{"event", event::peers_lost}, {"step", step.index()}, {"attempt", step.attempt()},
                       {"rank", impl_.agreement->rank()}, {"reason", why}});
  escalate(failed.failure, failed.report, why, {});
}

bool StepLoop::settle(const Step& step) {
  try {
    return impl_.agreement->settle();
  } catch (const std::exception&) {
    lost_peers(step);
  }
}

StepLoop::Decision StepLoop::handle_distributed_failure(Step& step, Clock::time_point caught) {
  Agreement& agreement = *impl_.agreement;
  if (agreement.broken()) lost_peers(step);
  const bool own = !agreement.failed();  // false: told by daifu::PeerFailed
  const Agreement::Outcome* outcome = nullptr;
  try {
    // A state check's detection restores the snapshot even where nothing was modified (the state
    // may have been spoiled steps ago): told as a modification, every rank rolls back.
    outcome = &agreement.fail(!impl_.state.mutated_since_begin().empty() || (own && state_fault_in_flight()));
  } catch (const std::exception&) {
    lost_peers(step);
  }
  const int64_t leader = outcome->leader();
  const std::string rank_name = "rank " + std::to_string(leader);

  if (own && agreement.rank() == leader) {
    nlohmann::json sent;
    Decision decision;
    const bool had_memo = !StepAccess::memos(step).empty();
    try {
      last_repair_ = {};
      decision = handle_failure(step, caught, outcome->mutated);
    } catch (const Unrecovered& u) {
      sent = {{"action", "escalate"}, {"kind", to_string(u.failure().kind)}, {"message", clipped(u.failure().message)},
              {"reason", clipped(u.what())}};
      try {
        agreement.exchange(sent.dump());
      } catch (const std::exception&) {
        // The others end on their own when the group's timeout passes.
      }
      throw;
    }
    const Failure& failure = impl_.incidents.back().failure;
    nlohmann::json changes = nlohmann::json::object();
    for (const auto& c : last_repair_.changes) changes[c.what] = nlohmann::json::parse(c.after_json);
    sent = {{"action", to_string(decision.action)}, {"kind", to_string(failure.kind)},
            {"message", clipped(failure.message)}, {"surgery", last_repair_.surgery}, {"changes", changes},
            {"snapshot", impl_.snapshot_requested},
            // The repair forgot the step's batch (out_of_memory at a new batch size): so do the others.
            {"forget_batch", had_memo && StepAccess::memos(step).empty()}};
    try {
      agreement.exchange(sent.dump());
    } catch (const std::exception&) {
      lost_peers(step);
    }
    return decision;
  }

  // A follower: another rank failed, or failed too and has the lower rank.
  std::optional<Reported> mine;
  if (own) mine = record_failure(step);
  const bool own_fatal = mine && mine->failure.kind == FailureKind::Fatal;
  if (const auto previous = agreement.previous_failed()) {
    // The step before this one failed on another rank after its update: it is the step to
    // repair, and this rank takes back its commit, so it runs again as the leader's does.
    const bool newest = high_water_ == previous->first + 1;
    StepAccess::index(step) = previous->first;
    StepAccess::attempt(step) = previous->second;
    const auto memo = memos_.find(step.index());
    StepAccess::memos(step) = memo != memos_.end() ? memo->second : StepAccess::Memos{};
    if (newest) {
      high_water_ = step.index();
      --impl_.stats.committed_steps;
    }
  }
  const std::vector<std::string> mutated = impl_.state.mutated_since_begin();
  // This rank's device may be gone (its own failure was fatal, or its generators cannot be
  // restored): it still hears the leader, then ends.
  std::string rng_error;
  try {
    if (!own_fatal) impl_.state.restore_rng();
  } catch (const std::exception& e) {
    rng_error = e.what();
  }
  impl_.values.restore_step();
  nlohmann::json got;
  try {
    got = nlohmann::json::parse(agreement.exchange(""));
  } catch (const std::exception&) {
    lost_peers(step);
  }
  const std::string action = got.value("action", "escalate");
  const std::string surgery = got.value("surgery", "");
  Failure failure;
  failure.kind = failure_kind_from_string(got.value("kind", "unknown")).value_or(FailureKind::Unknown);
  failure.exception_type = "daifu::PeerFailed";
  failure.message = rank_name + ": " + got.value("message", "");
  failure.where = where_;
  failure.step = step.index();
  failure.attempt = step.attempt();
  impl_.journal.write({{"event", event::peer_failure}, {"step", step.index()}, {"attempt", step.attempt()},
                       {"ranks", outcome->failed}, {"leader", leader}, {"kind", got.value("kind", "unknown")},
                       {"message", got.value("message", "")}, {"action", action}, {"surgery", surgery},
                       {"changes", got.value("changes", nlohmann::json::object())}, {"rollback", outcome->mutated}});
  impl_.journal.record("Step " + std::to_string(step.index()) + " attempt " + std::to_string(step.attempt()) + ": " +
                       rank_name + " failed (" + got.value("kind", "unknown") + "); doing as it does: " + action +
                       (surgery.empty() ? "" : " by " + surgery));
  impl_.incidents.push_back(Incident{failure, surgery, "unrecovered", {}, 0});
  if (action == "escalate") {
    escalate(failure, "", rank_name + " could not recover the step: " + got.value("reason", ""), {});
  }
  if (own_fatal) {
    escalate(mine->failure, mine->report, "a fatal error on this rank (the CUDA context may be gone); not retried in place", {});
  }
  if (!rng_error.empty()) escalate(failure, "", "restoring the random number generators failed: " + rng_error, {});

  Decision decision;
  decision.caught = caught;
  decision.action = action == "skip" ? Action::Skip : Action::Retry;
  if (outcome->mutated) {
    if (window_start_ < 0 || !impl_.snapshot.valid()) {
      escalate(failure, "", "tracked state was modified before the failure and there is no snapshot to restore it from", {});
    }
    try {
      restore_snapshot(step, mutated);
    } catch (const std::exception& e) {
      escalate(failure, "", std::string("restoring the snapshot failed: ") + e.what(), {});
    }
    decision.rollback = true;
  }
  const nlohmann::json changes = got.value("changes", nlohmann::json::object());
  for (const auto& [name, after] : changes.items()) {
    if (KnobBase* knob = impl_.services.find_knob(name)) {
      const std::string before = knob->json();
      knob->set_json(after.dump(), rank_name + "'s repair (" + surgery + ") at step " + std::to_string(step.index()));
      impl_.incidents.back().changes.push_back(name + ": " + before + " -> " + after.dump());
    }
  }
  if (got.value("snapshot", false)) impl_.snapshot_requested = true;
  if (got.value("forget_batch", false)) StepAccess::forget_memos(step);
  impl_.incidents.back().outcome = action;
  return decision;
}

}  // namespace daifu::detail
