// Built-in surgery: an out_of_memory failure (the CPU allocator's "can't allocate memory",
// std::bad_alloc, CUDA's OutOfMemoryError) frees what the failed step held and runs the step
// again with less memory per forward/backward: a halved micro-batch if the step used
// Step::micro_batches(), else a halved batch-size knob (and a linearly scaled learning rate).
// At the knob's floor, or with no knob to shrink, it escalates and says what the user can do.
// docs/surgeries.md#out_of_memory.
#pragma once

#include <daifu/surgery.h>

namespace daifu::detail {

class RepairServices;

class OutOfMemorySurgery final : public Surgery {
 public:
  OutOfMemorySurgery(SurgeryLimits limits, RepairServices& session);

 protected:
  bool matches(const Failure& failure) const override;
  Action operate(RepairContext& context) override;

 private:
  Action shrink_micro_batch(RepairContext& context, const std::string& knob_name);
  Action shrink_batch(RepairContext& context);
  /// Drops the tracked parameters' gradients and empties the CUDA cache (where there is one).
  void release_memory(RepairContext& context);

  RepairServices& session_;
};

}  // namespace daifu::detail
