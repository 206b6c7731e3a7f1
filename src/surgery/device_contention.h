// Built-in surgery: a device_contention failure ("all CUDA-capable devices are busy or
// unavailable") waits with exponential backoff and jitter, a bounded number of times per step
// (polling Options::device_probe during each wait, when there is one, to retry once it frees);
// then it moves the tracked state to the next device of the string knob "device" ("cuda:0" ->
// "cuda:1" -> ... -> "cpu" where Options::cpu_fallback allows) and retries there.
#pragma once

#include <daifu/surgery.h>

#include <chrono>
#include <optional>
#include <random>
#include <string>

namespace daifu::detail {

class RepairServices;

/// The device after `device` ("cuda", "cuda:N" or "cpu") among `gpus` GPUs: the next GPU, else
/// "cpu" if `cpu_fallback`; nullopt when there is none.
std::optional<std::string> next_device(const std::string& device, int64_t gpus, bool cpu_fallback);

class DeviceContentionSurgery final : public Surgery {
 public:
  DeviceContentionSurgery(SurgeryLimits limits, RepairServices& session);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  RepairServices& session_;
  std::minstd_rand jitter_;
  // This step's last probed wait ended with the probe saying free; a refusal after that makes
  // the rest of the step's waits sleep out their backoff.
  bool probe_said_free_ = false;
  bool probe_was_wrong_ = false;
};

}  // namespace daifu::detail
