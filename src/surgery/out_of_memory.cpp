#include "surgery/out_of_memory.h"

#include <daifu/session.h>
#include <daifu/step.h>

#include "journal/events.h"
#include "journal/journal.h"
#include "repair/repair_services.h"
#include "repair/step_access.h"
#include "state/cuda_runtime.h"
#include "state/tracked_state.h"
#include "surgery/memory_fit.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <sstream>

namespace daifu::detail {
namespace {

int64_t floor_of(const Knob<int64_t>& knob) { return std::max<int64_t>(knob.lower().value_or(1), 1); }

// Grown values that run out of memory again before a knob stays where it is.
constexpr int64_t kMaxFailedGrowths = 3;
constexpr int64_t kLargest = std::numeric_limits<int64_t>::max();

std::string where_text(const RepairContext& context) {
  return "out of memory at step " + std::to_string(context.failure().step) + " (attempt " +
         std::to_string(context.failure().attempt) + ")";
}

std::string number_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// What to shrink a knob at `old` to: half of it, or less where the failure says what was refused
// and the memory left says what would fit (memory_fit.h), so that one retry fits instead of
// several halvings; never below `floor`. Call after release_memory. `how` says which it was.
int64_t shrunk_value(RepairContext& context, int64_t old, int64_t floor, std::string& how) {
  int64_t smaller = old / 2;
  how = "halved";
  const OomMessage refused = parse_oom_message(context.failure().message);
  std::optional<int64_t> headroom;
  std::string source;
  int64_t least = 0;
  if (refused.free >= 0) {
    headroom = refused.free;
    source = "free on the device by the allocator's message";
    // Said while the failed step still held its own memory, which is free again now: the
    // figure undercounts by an unknown amount, so it may cut at most to a quarter.
    least = old / 4;
  } else if (refused.requested > 0 && refused.cpu) {
    headroom = address_space_headroom();
    source = "left under the address-space cap (RLIMIT_AS)";
  }
  if (headroom && refused.requested > 0) {
    context.note("refused_bytes", "null", std::to_string(refused.requested));
    context.note("headroom_bytes", "null", std::to_string(*headroom));
    const auto fit = fitting_batch(old, refused.requested, *headroom);
    if (fit && *fit < smaller) {
      smaller = std::max(*fit, least);
      how = "sized to fit (" + std::to_string(refused.requested) + " bytes refused, " + std::to_string(*headroom) +
            " bytes " + source + ")";
    }
  }
  return std::max(floor, smaller);
}

}  // namespace

OutOfMemorySurgery::OutOfMemorySurgery(SurgeryLimits limits, RepairServices& session)
    : Surgery("out_of_memory", limits), session_(session) {
  parse_oom_message("");  // compiles its regexes now, not at the first failure
  prepare_address_space_headroom();
}

bool OutOfMemorySurgery::matches(const Failure& failure) const { return failure.kind == FailureKind::OutOfMemory; }

Action OutOfMemorySurgery::operate(RepairContext& context) {
  const std::string& micro = context.step().micro_batch_knob();
  if (micro.empty() && StepAccess::from_range(context.step())) {
    // A batch knob would not change what the range yields, and forgetting the batch would lose it.
    context.explain("the step's batch comes from a DAIFU_GUARD_EACH range, whose batch size daifu cannot change; "
                    "split it with Step::micro_batches and a micro-batch knob, which this surgery halves");
    return Action::Escalate;
  }
  return micro.empty() ? shrink_batch(context) : shrink_micro_batch(context, micro);
}

void OutOfMemorySurgery::release_memory(RepairContext& context) {
  const int64_t bytes = session_.state().release_grads();
  if (bytes > 0) context.note("grad_bytes", std::to_string(bytes), "0");
  const CudaCacheRelease cache = empty_cuda_cache();
  if (cache.emptied) context.note("cuda_cache_emptied", "false", "true");
  if (cache.reserved_before && cache.reserved_after) {
    context.note("cuda_reserved_bytes", std::to_string(*cache.reserved_before), std::to_string(*cache.reserved_after));
  }
}

Action OutOfMemorySurgery::shrink_micro_batch(RepairContext& context, const std::string& name) {
  Knob<int64_t>* knob = context.session().find_knob<int64_t>(name);
  if (knob == nullptr) {
    context.explain("the micro-batch knob \"" + name + "\" given to Step::micro_batches is not an int64 knob of this "
                    "session; create it with session.knob<int64_t>(\"" + name + "\", ...)");
    return Action::Escalate;
  }
  const int64_t old = knob->get();
  const int64_t floor = floor_of(*knob);
  if (old <= floor) {
    context.explain("micro-batch knob \"" + name + "\" is at its floor " + std::to_string(floor) +
                    ": not even one micro-batch fits; lower the floor with knob(\"" + name +
                    "\", ...).min(...), or use a smaller model or a device with more memory");
    return Action::Escalate;
  }
  release_memory(context);
  std::string how;
  const int64_t smaller = shrunk_value(context, old, floor, how);
  knob->set(smaller, where_text(context) + ": micro-batch " + how + ", the logical batch is unchanged");
  context.explain(how + " micro-batch knob \"" + name + "\" " + std::to_string(old) + " -> " +
                  std::to_string(smaller) + "; each optimizer step still sees the whole logical batch");
  remember_shrink(context, name, old, false);
  return Action::Retry;
}

Action OutOfMemorySurgery::shrink_batch(RepairContext& context) {
  const std::string& name = session_.options().batch_knob();
  Knob<int64_t>* batch = context.session().find_knob<int64_t>(name);
  if (batch == nullptr) {
    context.explain("the step did not use Step::micro_batches and the session has no int64 knob \"" + name +
                    "\" (Options::batch_knob) to shrink; read the batch size from session.knob<int64_t>(\"" + name +
                    "\", 64).min(8), or split the batch with Step::micro_batches");
    return Action::Escalate;
  }
  const int64_t old = batch->get();
  const int64_t floor = floor_of(*batch);
  if (old <= floor) {
    context.explain("\"" + name + "\" is at its floor " + std::to_string(floor) + "; lower it with knob(\"" + name +
                    "\", ...).min(...) or split the batch with Step::micro_batches");
    return Action::Escalate;
  }
  release_memory(context);
  std::string how;
  const int64_t smaller = shrunk_value(context, old, floor, how);
  const std::string reason = where_text(context) + ": batch " + how;
  batch->set(smaller, reason);
  std::string why = how + " \"" + name + "\" " + std::to_string(old) + " -> " + std::to_string(smaller) +
                    scale_lr(context.session(), old, smaller, reason + ", learning rate scaled linearly");

  // The memoized batch has the old size: forget it so the retry draws one at the new size.
  nlohmann::json keys = nlohmann::json::array();
  StepAccess::for_each_memo(context.step(), [&](const std::string& key, const std::type_info&, void*) { keys.push_back(key); });
  if (!keys.empty()) {
    std::sort(keys.begin(), keys.end());
    StepAccess::forget_memos(context.step());
    context.note("step_memos", keys.dump(), "[]");
    why += "; the step's Step::once values were dropped so the retry draws its batch at the new size";
  }
  context.explain(why);
  remember_shrink(context, name, old, true);
  return Action::Retry;
}

std::string OutOfMemorySurgery::scale_lr(Session& session, int64_t before, int64_t after, const std::string& reason) {
  const std::string& name = session_.options().lr_knob();
  if (name.empty()) return "";
  auto* lr = session.find_knob<double>(name);
  if (lr == nullptr) return "; the learning rate was left alone: Options::lr_knob names no double knob \"" + name + "\"";
  const double old = lr->get();
  lr->set(old * static_cast<double>(after) / static_cast<double>(before), reason);
  return " and scaled \"" + name + "\" " + number_text(old) + " -> " + number_text(lr->get());
}

void OutOfMemorySurgery::remember_shrink(RepairContext& context, const std::string& name, int64_t before, bool batch) {
  const int64_t wait = session_.options().oom_grow_back();
  if (wait == 0 || session_.options().distributed().group() != nullptr) return;
  auto [it, fresh] = shrunk_.try_emplace(name);
  Shrunk& s = it->second;
  if (fresh) {
    s.original = before;
    s.batch = batch;
  } else if (s.grown) {  // the grown value did not fit either
    ++s.failed;
  }
  s.wait = std::min(wait, kLargest >> s.failed) << s.failed;  // doubled per failed growth, saturating
  s.settled = s.failed >= kMaxFailedGrowths;
  s.shrunk_at = context.failure().step;
  s.good = 0;
  s.grown = false;
  context.explain(context.explanation() +
                  (s.settled
                      ? "; it stays there: " + std::to_string(s.failed) + " growths back ran out of memory again"
                      : "; it grows back toward " + std::to_string(s.original) + " after " + std::to_string(s.wait) +
                            " steps without another out-of-memory failure (Options::oom_grow_back)"));
}

void OutOfMemorySurgery::step_committed(Session& session, int64_t step) {
  for (auto& [name, s] : shrunk_) {
    if (++s.good < s.wait) continue;
    s.good = 0;
    s.grown = false;  // the last growth held for a whole wait: a later failure is a new shrink
    if (s.settled) continue;
    Knob<int64_t>* knob = session.find_knob<int64_t>(name);
    if (knob == nullptr) continue;
    const int64_t now = knob->get();
    int64_t grown = std::min(s.original, now > kLargest / 2 ? kLargest : now * 2);
    if (knob->upper()) grown = std::min(grown, *knob->upper());
    if (grown <= now) {
      s.settled = true;  // something else moved it up: nothing to grow
      continue;
    }
    const std::string reason = std::to_string(s.wait) + " steps without running out of memory since step " +
                               std::to_string(s.shrunk_at) + ": grown back toward " + std::to_string(s.original);
    nlohmann::json line = {{"event", event::grow_back}, {"step", step},          {"name", name},
                           {"before", now},             {"after", grown},        {"good_steps", s.wait},
                           {"shrunk_at", s.shrunk_at}};
    // The learning rate follows the batch linearly, within its knob's bounds.
    Knob<double>* lr = s.batch ? session.find_knob<double>(session_.options().lr_knob()) : nullptr;
    double lr_after = 0;
    if (lr != nullptr) {
      lr_after = lr->get() * static_cast<double>(grown) / static_cast<double>(now);
      if (lr->lower()) lr_after = std::max(lr_after, *lr->lower());
      if (lr->upper()) lr_after = std::min(lr_after, *lr->upper());
      line["lr"] = nlohmann::json::array({lr->get(), lr_after});
    }
    session_.journal().write(line);
    knob->set(grown, reason);
    if (lr != nullptr) lr->set(lr_after, reason + ", learning rate scaled linearly");
    s.grown = true;
    s.settled = grown == s.original;
  }
}

}  // namespace daifu::detail
