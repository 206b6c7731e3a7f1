// The step agreement of a distributed session (Options::distributed). Every attempt of a step
// has two points at which each rank says whether its attempt failed and whether it modified
// tracked state: the update point (Step::before_update(), or the step's end if the step never
// called it) and the end point (after the step). Each point is one all-reduce, so a failure on
// any rank is known to all of them at the same point; the lowest failing rank then decides the
// repair and exchange() hands it to the others. Torch-free header; the work is in agreement.cpp.
#pragma once

#include <daifu/distributed.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace daifu::detail {

class TrackedState;

/// The rank of this process in `group`.
int64_t group_rank(c10d::ProcessGroup& group);

class Agreement {
 public:
  /// Throws daifu::Error if `options` names no group.
  Agreement(const DistributedOptions& options, TrackedState& state);
  ~Agreement();
  Agreement(const Agreement&) = delete;
  Agreement& operator=(const Agreement&) = delete;

  int64_t rank() const noexcept;
  int64_t world() const noexcept;

  /// What a point at which some rank failed told every rank.
  struct Outcome {
    std::vector<int64_t> failed;  ///< the ranks whose attempt failed, ascending
    bool mutated = false;         ///< some rank had modified tracked state: all roll back
    int64_t leader() const { return failed.front(); }
  };

  /// A new attempt begins: neither point is passed.
  void begin_attempt() noexcept;
  /// The update point with this rank's attempt going well (Step::before_update()); averages the
  /// gradients of the tracked parameters with DistributedOptions::average_gradients(). Throws
  /// daifu::PeerFailed if a rank failed. A second call in the same attempt does nothing.
  void update_point();
  /// The step went well on this rank: the update point if it was not passed, then the end
  /// point, which also decides snapshot_next() (`want_snapshot` on any rank). Throws
  /// daifu::PeerFailed if a rank failed.
  void end_point(bool want_snapshot);
  /// This rank's attempt failed: takes part in the point it had not passed, with `mutated`
  /// (this rank modified tracked state). When a point already failed (this rank was told by
  /// PeerFailed) returns what it said without a collective.
  const Outcome& fail(bool mutated);
  /// Whether the point of this attempt told of a failure (fail() returns it without a collective).
  bool failed() const noexcept;

  /// Whether the last end point agreed on a snapshot before the next step.
  bool snapshot_next() const noexcept;

  /// The leader of the failed point passes its repair; every rank returns the leader's.
  /// Throws daifu::Error if the leader's does not fit the exchange (16 KiB).
  std::string exchange(const std::string& decision);

  /// A collective threw (a peer died, a timeout, a transport error): nothing more is tried on
  /// the group, and broken_reason() says what happened.
  bool broken() const noexcept;
  const std::string& broken_reason() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace daifu::detail
