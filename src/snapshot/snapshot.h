// An in-memory snapshot of everything a session tracks: module parameters and buffers,
// optimizer per-parameter state (including entries that did not exist yet) and param-group
// options, tracked tensors, and the RNGs. Data lives in host buffers that are allocated once
// and reused by every later capture (fresh allocations are ~10x slower to fill here).
#pragma once

#include "snapshot/persistent_store.h"
#include "state/tracked_state.h"

#include <cstdint>
#include <memory>
#include <string>

namespace daifu::detail {

class Snapshot {
 public:
  Snapshot();
  ~Snapshot();
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  /// Copies the tracked state aside, taken at the start of step `step`. Throws daifu::Error if
  /// an optimizer keeps state of a type daifu cannot copy; the previous capture is then gone.
  void capture(const TrackedState& state, int64_t step, int64_t global_step);
  /// Puts the last capture back into the tracked objects, in place where shapes still match.
  /// Throws daifu::Error if a tracked module's tensors changed in number or shape since.
  void restore(const TrackedState& state) const;

  /// Writes the last capture to `store` (one commit). `extra_json` (a JSON object's text) is
  /// kept with it and returned by restore_persisted().
  void persist(PersistentStore& store, const std::string& extra_json, bool durable) const;

  /// A snapshot read back from disk, checked against the tracked objects.
  struct Persisted {
    int64_t step = -1;
    int64_t global_step = 0;
    std::string extra_json;
  };
  /// Puts a persisted snapshot into the tracked objects. Everything is checked first: if the
  /// snapshot does not fit them (other objects, other shapes) daifu::Error names the first
  /// mismatch and nothing is modified. Invalidates the in-memory capture.
  Persisted restore_persisted(const TrackedState& state, const PersistentStore::Found& found);

  bool valid() const noexcept;
  int64_t step() const noexcept;
  int64_t global_step() const noexcept;
  /// Host bytes the snapshot holds.
  uint64_t bytes() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace daifu::detail
