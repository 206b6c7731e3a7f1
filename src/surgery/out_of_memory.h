// Built-in surgery: an out_of_memory failure (the CPU allocator's "can't allocate memory",
// std::bad_alloc, CUDA's OutOfMemoryError) frees what the failed step held and runs the step
// again with less memory per forward/backward: a halved micro-batch if the step used
// Step::micro_batches(), else a halved batch-size knob (and a linearly scaled learning rate).
// At the knob's floor, or with no knob to shrink, it escalates and says what the user can do.
// Once Options::oom_grow_back steps have committed without another out-of-memory failure, it
// doubles a knob it shrank back toward its value before the shrink, journaled as "grow_back".
// docs/surgeries.md#out_of_memory.
#pragma once

#include <daifu/surgery.h>

#include <cstdint>
#include <map>
#include <string>

namespace daifu::detail {

class RepairServices;

class OutOfMemorySurgery final : public Surgery {
 public:
  OutOfMemorySurgery(SurgeryLimits limits, RepairServices& session);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;
  void step_committed(Session& session, int64_t step) override;

 private:
  /// A knob this surgery shrank, until it is back at `original` or stays shrunk.
  struct Shrunk {
    int64_t original = 0;    // its value before the first shrink
    int64_t shrunk_at = 0;   // the step of the last shrink
    int64_t wait = 0;        // committed steps without an out-of-memory failure before it grows
    int64_t good = 0;        // committed steps since the last shrink or growth
    int64_t failed = 0;      // growths that ran out of memory again
    bool grown = false;      // grown since the last shrink
    bool settled = false;    // back at `original`, or staying where it is
    bool batch = false;      // the batch knob: the learning rate knob follows it
  };
  /// Records that `name` went down from `before`; says in `context` when it will grow back.
  void remember_shrink(RepairContext& context, const std::string& name, int64_t before, bool batch);
  /// Scales Options::lr_knob by after/before; returns "" or what it did, for the reason.
  std::string scale_lr(Session& session, int64_t before, int64_t after, const std::string& reason);

  Action shrink_micro_batch(RepairContext& context, const std::string& knob_name);
  Action shrink_batch(RepairContext& context);
  /// Drops the tracked parameters' gradients and empties the CUDA cache (where there is one).
  void release_memory(RepairContext& context);

  RepairServices& session_;
  std::map<std::string, Shrunk> shrunk_;
};

}  // namespace daifu::detail
