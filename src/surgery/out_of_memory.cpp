#include "surgery/out_of_memory.h"

#include <daifu/session.h>
#include <daifu/step.h>

#include "repair/repair_services.h"
#include "repair/step_access.h"
#include "state/cuda_runtime.h"
#include "state/tracked_state.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <sstream>

namespace daifu::detail {
namespace {

int64_t floor_of(const Knob<int64_t>& knob) { return std::max<int64_t>(knob.lower().value_or(1), 1); }

std::string where_text(const RepairContext& context) {
  return "out of memory at step " + std::to_string(context.failure().step) + " (attempt " +
         std::to_string(context.failure().attempt) + ")";
}

std::string number_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

OutOfMemorySurgery::OutOfMemorySurgery(SurgeryLimits limits, RepairServices& session)
    : Surgery("out_of_memory", limits), session_(session) {}

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
  const int64_t smaller = std::max(floor, old / 2);
  knob->set(smaller, where_text(context) + ": micro-batch halved, the logical batch is unchanged");
  context.explain("halved micro-batch knob \"" + name + "\" " + std::to_string(old) + " -> " +
                  std::to_string(smaller) + "; each optimizer step still sees the whole logical batch");
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
  const int64_t smaller = std::max(floor, old / 2);
  const std::string reason = where_text(context) + ": batch halved";
  batch->set(smaller, reason);
  std::string why = "halved \"" + name + "\" " + std::to_string(old) + " -> " + std::to_string(smaller);

  if (const std::string& lr_name = session_.options().lr_knob(); !lr_name.empty()) {
    if (auto* lr = context.session().find_knob<double>(lr_name)) {
      const double before = lr->get();
      lr->set(before * static_cast<double>(smaller) / static_cast<double>(old), reason + ", learning rate scaled linearly");
      why += " and scaled \"" + lr_name + "\" " + number_text(before) + " -> " + number_text(lr->get());
    } else {
      why += "; the learning rate was left alone: Options::lr_knob names no double knob \"" + lr_name + "\"";
    }
  }

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
  return Action::Retry;
}

}  // namespace daifu::detail
