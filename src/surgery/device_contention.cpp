#include "surgery/device_contention.h"

#include <daifu/session.h>

#include "repair/repair_services.h"
#include "state/cuda_runtime.h"
#include "state/tracked_state.h"
#include "surgery/backoff.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

namespace daifu::detail {
namespace {

struct ProbedWait {
  bool free = false;
  int64_t probes = 0;
  std::chrono::microseconds waited{0};
};

// Polls `probe` until it says free or `limit` has passed: after 1 ms, 2 ms, then every 4 ms,
// so the retry comes at most ~4 ms after the device frees. A probe that throws says busy.
ProbedWait wait_probing(const std::function<bool()>& probe, std::chrono::microseconds limit) {
  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  const auto deadline = started + limit;
  ProbedWait w;
  for (std::chrono::microseconds interval{1000};; interval = std::min(interval * 2, std::chrono::microseconds{4000})) {
    const auto now = Clock::now();
    if (now >= deadline) break;
    std::this_thread::sleep_for(std::min<Clock::duration>(interval, deadline - now));
    ++w.probes;
    try {
      w.free = probe();
    } catch (...) {
      w.free = false;
    }
    if (w.free) break;
  }
  w.waited = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
  return w;
}

}  // namespace

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
    const std::string which = "(wait " + std::to_string(n + 1) + " of " + std::to_string(o.contention_waits()) + ")";
    if (n == 0) probe_said_free_ = probe_was_wrong_ = false;
    if (probe_said_free_) probe_was_wrong_ = true;  // the retry after the probe's "free" was refused
    if (!o.device_probe() || probe_was_wrong_) {
      context.wait(wait);
      context.explain(std::string(probe_was_wrong_ ? "the device probe said free but the device was refused; " : "") +
                      "waited for the device " + which);
      return Action::Retry;
    }
    const ProbedWait w = wait_probing(o.device_probe(), wait);
    probe_said_free_ = w.free;
    context.note("wait_us", "0", std::to_string(w.waited.count()));
    context.note("probes", "0", std::to_string(w.probes));
    context.explain(std::string(w.free ? "the device probe said free" : "the device probe still said busy") +
                    " after " + std::to_string(w.waited.count() / 1000) + " ms and " + std::to_string(w.probes) +
                    " probes " + which);
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
