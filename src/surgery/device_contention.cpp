#include "surgery/device_contention.h"

#include <daifu/session.h>

#include "repair/repair_services.h"
#include "state/cuda_runtime.h"
#include "state/tracked_state.h"
#include "surgery/backoff.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

namespace daifu::detail {

std::optional<std::string> next_device(const std::string& device, int64_t gpus, bool cpu_fallback) {
  int64_t index = -1;
  if (device == "cuda") {
    index = 0;
  } else if (device.rfind("cuda:", 0) == 0 && device.size() > 5 &&
             device.find_first_not_of("0123456789", 5) == std::string::npos && device.size() < 15) {
    index = std::stoll(device.substr(5));
  } else {
    return std::nullopt;  // "cpu" or a device daifu does not move between
  }
  if (index + 1 < gpus) return "cuda:" + std::to_string(index + 1);
  if (cpu_fallback) return std::string("cpu");
  return std::nullopt;
}

DeviceContentionSurgery::DeviceContentionSurgery(SurgeryLimits limits, RepairServices& session)
    : Surgery("device_contention", limits), session_(session), jitter_(std::random_device{}()) {}

bool DeviceContentionSurgery::matches(const Failure& failure) const {
  return failure.kind == FailureKind::DeviceContention;
}

Action DeviceContentionSurgery::operate(RepairContext& context) {
  const Options& o = session_.options();
  const int64_t n = context.fired_this_step();
  if (n < o.contention_waits()) {
    // Another process holds the device: it may let go soon.
    const auto wait = jittered_backoff(o.contention_backoff(), n, o.max_backoff(), jitter_);
    context.wait(wait);
    context.explain("waiting for the device (wait " + std::to_string(n + 1) + " of " +
                    std::to_string(o.contention_waits()) + ")");
    return Action::Retry;
  }
  auto* knob = context.session().find_knob<std::string>("device");
  if (knob == nullptr) {
    context.explain("the device stayed busy through " + std::to_string(o.contention_waits()) +
                    " waits and there is no string knob \"device\" to move training elsewhere");
    return Action::Escalate;
  }
  const int64_t gpus = cuda_device_count();
  const auto next = next_device(knob->get(), gpus, o.cpu_fallback());
  if (!next) {
    context.explain("the device " + knob->get() + " stayed busy through " + std::to_string(o.contention_waits()) +
                    " waits and there is no other device to move to (" + std::to_string(gpus) + " GPUs" +
                    (o.cpu_fallback() ? "" : "; Options::cpu_fallback is off") + ")");
    return Action::Escalate;
  }
  session_.state().move_to(*next);  // a failed move is journaled as a failed surgery
  knob->set(*next, "device " + knob->get() + " stayed busy");
  context.explain("moved the tracked state to " + *next + " after " + std::to_string(o.contention_waits()) +
                  " waits");
  return Action::Retry;
}

}  // namespace daifu::detail
