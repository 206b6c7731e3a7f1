// The step agreement of a distributed session (Options::distributed). Every attempt of a step
// has two points at which each rank says whether its attempt failed and whether it modified
// tracked state: the update point (Step::before_update(), or the step's end if the step never
// called it), one all-reduce that also carries the gradients and the ranks' votes for a
// snapshot before the next step, and the end point, after the step. A failure on any rank is
// thus known to all of them at the same point. The end point costs no collective of its own
// when the next step of the loop follows without a snapshot: it rides on that step's update
// point (each rank adds whether its previous step failed after its update). Before a snapshot
// and after the loop's last step it is an all-reduce of its own, not waited for when the step
// ends well: it completes while the next step computes, and is settled before a snapshot, at
// this rank's own failure and at the loop's end. Then the lowest failing rank decides the
// repair and exchange() hands it to the others.
// Torch-free header; the work is in agreement.cpp.
#pragma once

#include <daifu/distributed.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
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

  /// A new attempt of step `step` begins: neither point is passed. `next_follows`: the loop
  /// runs another step after this one (the end point may then ride on its update point).
  void begin_attempt(int64_t step, int64_t attempt, bool next_follows) noexcept;
  /// This rank's vote, at the update point, for a snapshot before the next step.
  void vote_snapshot(bool want) noexcept;
  /// Throws daifu::PeerFailed if settle() told of a failure since begin_attempt().
  void raise_if_failed() const;
  /// The update point with this rank's attempt going well (Step::before_update()): settles the
  /// previous step's end point, then averages the gradients of the tracked parameters with
  /// DistributedOptions::average_gradients(). Throws daifu::PeerFailed if a rank failed (this
  /// step, or the previous one after its update). A second call in the same attempt does nothing.
  void update_point();
  /// The step went well on this rank: the update point if it was not passed, then the end
  /// point, issued without waiting or left to the next step's update point. Throws
  /// daifu::PeerFailed if the update point told of a failure.
  void end_point();
  /// Waits for the previous step's end point; false if it told of a failure (failed() is then
  /// true and previous_failed() says which step).
  bool settle();
  /// Whether every rank is known to have ended the previous step well (settle() returned true
  /// and its end point was not left to this step's update point): a snapshot needs that.
  bool previous_confirmed() const noexcept;
  /// This rank's attempt failed: settles the previous end point, then takes part in the point
  /// it had not passed, with `mutated` (this rank modified tracked state). When a point already
  /// told of a failure, returns what it said without a collective.
  const Outcome& fail(bool mutated);
  /// Whether a point told of a failure (fail() returns it without a collective).
  bool failed() const noexcept;
  /// The failure told is of the previous step, after its update: {step, attempt}; the step
  /// running now is moot, and every rank rolls back to re-run the failed one.
  std::optional<std::pair<int64_t, int64_t>> previous_failed() const noexcept;

  /// Whether the last update point agreed on a snapshot before the next step.
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
