// Data-parallel training over PyTorch's c10d (ProcessGroupGloo here, ProcessGroupNCCL on
// GPUs): every rank agrees, at each step, whether the step committed everywhere; a failure on
// any rank is rolled back and repaired the same way on all of them (docs/distributed.md).
#pragma once

#include <daifu/export.h>

namespace c10d {
class ProcessGroup;
}

namespace daifu {

/// Set with Options::distributed(). Example (one process per rank):
///   auto group = daifu::make_gloo_group(store, rank, world, std::chrono::seconds(30));  // <daifu/gloo_group.h>
///   daifu::Session session(daifu::Options().distributed(daifu::DistributedOptions().group(*group)));
///   ...
///   loss.backward();
///   step.before_update();   // agrees with the other ranks and averages the gradients
///   optimizer.step();
class DAIFU_API DistributedOptions {
 public:
  /// The ranks training together; it must outlive the session. Every collective daifu runs on
  /// it is bounded by the group's own timeout (make_gloo_group's `timeout`): a peer that
  /// died or stalls ends the step on every surviving rank with daifu::Unrecovered, not a hang.
  /// The workplace of rank r is <workplace>/rank-<r>.
  DistributedOptions& group(c10d::ProcessGroup& g) { group_ = &g; return *this; }
  c10d::ProcessGroup* group() const noexcept { return group_; }

  /// Step::before_update() averages the gradients of the tracked parameters over the ranks,
  /// in one all-reduce that also carries the agreement (the default). Off: the program
  /// all-reduces gradients itself after before_update(), and the agreement is an all-reduce
  /// of its own.
  DistributedOptions& average_gradients(bool on) { average_gradients_ = on; return *this; }
  bool average_gradients() const noexcept { return average_gradients_; }

 private:
  c10d::ProcessGroup* group_ = nullptr;
  bool average_gradients_ = true;
};

}  // namespace daifu
