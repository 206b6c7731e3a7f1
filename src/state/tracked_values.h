// Plain values a session tracks (Session::track_value): a loss accumulator, a counter, a small
// struct of them. Unlike tensors they have no version counter, so they are copied aside at
// every step start (a few bytes) and put back whenever a step fails; a snapshot keeps its own
// copy for rollbacks and for the persisted snapshot. Torch-free.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace daifu::detail {

class TrackedValues {
 public:
  /// The most bytes one value may have: these are copied at every step.
  static constexpr std::size_t kMaxBytes = 4096;

  /// Throws daifu::Error if `name` is tracked already or `size` exceeds kMaxBytes.
  void add(const std::string& name, void* value, std::size_t size);
  bool contains(const std::string& name) const noexcept;
  bool empty() const noexcept { return values_.empty(); }

  /// At a step's start: remember every value.
  void begin_step() noexcept;
  /// After a failure: every value as it was at the step's start.
  void restore_step() noexcept;
  /// With a snapshot: remember every value; restore_snapshot() puts them back.
  void capture() noexcept;
  void restore_snapshot() noexcept;

  /// The snapshot's copies, as {name: hex} JSON text, for a persisted snapshot.
  std::string snapshot_json() const;
  /// Sets the values from snapshot_json() text (a resumed run). A value the text lacks, or has
  /// with another size, keeps its value; returns the names of those.
  std::vector<std::string> restore_json(const std::string& json);

 private:
  struct Value {
    std::string name;
    unsigned char* data;
    std::size_t size;
    std::vector<unsigned char> at_step, at_snapshot;
  };
  std::vector<Value> values_;
};

}  // namespace daifu::detail
